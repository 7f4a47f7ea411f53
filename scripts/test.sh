#!/usr/bin/env bash
# Set up a fresh machine (python env, offline assets) and run the test suite.
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh tests/test_metrics.py -k pa_mpjpe   # extra args go to pytest
#   PBN_TEST_FBX=1 bash scripts/test.sh  # also install Blender (bpy) and run the FBX tests
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/install_pip.sh
bash scripts/fetch_assets.sh
if [[ -f scripts/install_node_tools.sh ]]; then
    bash scripts/install_node_tools.sh
fi
if [[ "${PBN_TEST_FBX:-0}" == "1" && -f scripts/install_fbx.sh ]]; then
    bash scripts/install_fbx.sh
fi

# glibc malloc that keeps freed memory speeds up large-tensor CPU work (SPEC, Environment facts).
export MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-4294967296}
export MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-4294967296}
export MALLOC_TOP_PAD_=${MALLOC_TOP_PAD_:-268435456}
export PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-egl}

# In CI every test must be able to run: skips for missing assets would hide a broken install.
if [[ "${CI:-}" == "true" ]]; then
    export PBN_REQUIRE_ASSETS=1
fi
exec .venv/bin/python -m pytest -q -ra "$@"
