#!/usr/bin/env bash
# Install Blender-as-a-Python-module (bpy) into its own venv, .venv-fbx/, for
# FBX export. bpy pins its own numpy and needs CPython 3.11, so it is kept out of
# the main environment; lib/export/fbx.py runs it as a subprocess.
#
# Idempotent: does nothing when .venv-fbx/ already imports the pinned bpy.
# Usage: bash scripts/install_fbx.sh            (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."

BPY_VERSION="${BPY_VERSION:-4.5.15}"
VENV=".venv-fbx"
PYTHON="${PYTHON:-}"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import bpy, sys; sys.exit(0 if bpy.app.version_string.startswith('${BPY_VERSION%.*}') else 1)" >/dev/null 2>&1; then
    echo "bpy already installed in $VENV"
    exit 0
fi

if [ -z "$PYTHON" ]; then
    for cand in python3.11 .venv/bin/python python3; do
        if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
            PYTHON="$cand"; break
        fi
    done
fi
if [ -z "$PYTHON" ]; then
    echo "install_fbx.sh: bpy $BPY_VERSION needs CPython 3.11; set PYTHON=/path/to/python3.11" >&2
    exit 2
fi
# Resolve a venv interpreter to its base so the new venv does not nest.
BASE="$("$PYTHON" -c 'import sys; print(sys._base_executable)')"

echo "creating $VENV with $BASE (bpy $BPY_VERSION is about 950 MB)"
"$BASE" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --progress-bar off "bpy==$BPY_VERSION"
"$VENV/bin/python" -c "import bpy; print('bpy', bpy.app.version_string, 'ready in $VENV')"
