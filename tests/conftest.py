"""Shared pytest fixtures."""
from __future__ import annotations

import os

import pytest

# Keep test runs reproducible and light on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def toy_body_model_dir(tmp_path_factory):
    """Folder with a tiny SMPL-format model (see tests/toy_body_model.py)."""
    from tests.toy_body_model import write_toy_body_model

    return write_toy_body_model(tmp_path_factory.mktemp("toy_body_model"))


@pytest.fixture(scope="session")
def toy_body_model(toy_body_model_dir):
    from lib.body_models import load_body_model

    return load_body_model("open", model_dir=toy_body_model_dir)
