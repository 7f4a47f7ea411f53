import re
from pathlib import Path

import pytest
import yaml

from lib.core import config
from lib.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_order_defaults_then_file_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("TRAIN:\n  BATCH_SIZE: 4\n  NUM_EPOCHS: 3\n")
    cfg = config.load_config(f, ["TRAIN.BATCH_SIZE", "8"])
    assert cfg.TRAIN.BATCH_SIZE == 8 and cfg.TRAIN.NUM_EPOCHS == 3
    assert cfg.DATASET.SEQ_LEN == 16  # default untouched
    assert cfg.is_frozen()


@pytest.mark.parametrize("text,msg", [
    ("TRAIN:\n  NOPE: 1\n", "unknown config key TRAIN.NOPE"),
    ("TRAIN:\n  BATCH_SIZE: [1\n", "malformed YAML"),
    ("- 1\n- 2\n", "expected a mapping"),
    ("TRAIN:\n  BATCH_SIZE: abc\n", "TRAIN.BATCH_SIZE"),
])
def test_bad_files_give_one_clear_error(tmp_path, text, msg):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(msg)) as err:
        config.load_config(f)
    assert "\n" not in str(err.value)


def test_bad_overrides(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key NOPE.X"):
        config.load_config(None, ["NOPE.X", "1"])
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        config.load_config(None, ["TRAIN.BATCH_SIZE"])
    with pytest.raises(ConfigError, match="not found"):
        config.load_config(tmp_path / "missing.yaml")


def test_saved_config_loads_back_identically(tmp_path):
    cfg = config.load_config(None, ["SEED", "7"])
    path = config.save_config(cfg, tmp_path / "run")
    again = config.load_config(path)
    assert again == cfg


def test_every_default_is_commented():
    src = (ROOT / "lib" / "core" / "config.py").read_text()
    for line in src.splitlines():
        m = re.match(r"^_C(\.[A-Z0-9_]+)+ = (?!CN\(\))", line)
        if m:
            assert "#" in line, f"default without a comment: {line}"


def test_shipped_configs_load():
    for f in sorted((ROOT / "configs").glob("*.yaml")):
        config.load_config(f)


def test_device_and_body_model_dir():
    assert config.resolve_device("cpu") == "cpu"
    assert config.resolve_device("auto") in ("cpu", "cuda")
    cfg = config.load_config(None, ["BODY_MODEL.KIND", "smpl"])
    assert config.body_model_dir(cfg) == Path("data/body_models/smpl")


def test_entry_script_options_may_follow_the_overrides():
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--no_progress", action="store_true")
    config.add_config_arguments(parser)
    args = parser.parse_args(["--cfg", str(ROOT / "configs" / "pbn.yaml"), "TRAIN.BATCH_SIZE", "8", "SEED", "-3",
                              "--no_progress"])
    assert args.no_progress
    cfg = config.config_from_args(args)
    assert cfg.TRAIN.BATCH_SIZE == 8 and cfg.SEED == -3
