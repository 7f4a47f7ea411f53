#!/usr/bin/env bash
# Conda alternative to scripts/install_pip.sh: an environment named "pbn" with
# Python 3.11 and the same pip requirements. Usage: bash scripts/install_conda.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV_NAME="${PBN_CONDA_ENV:-pbn}"
command -v conda >/dev/null 2>&1 || { echo "conda not found; use scripts/install_pip.sh" >&2; exit 1; }
if ! conda env list | awk '{print $1}' | grep -qx "$ENV_NAME"; then
    conda create -y -n "$ENV_NAME" python=3.11
fi
conda run -n "$ENV_NAME" python -m pip install -r "$ROOT/requirements.txt"
SITE="$(conda run -n "$ENV_NAME" python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$ROOT" > "$SITE/pbn.pth"   # makes `import lib...` work from scripts/ (like an editable install)
echo "done: conda activate $ENV_NAME"
