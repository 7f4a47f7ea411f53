#!/usr/bin/env bash
# Set up a fresh machine (python env, offline assets) and run the demo on the
# sample video. Outputs go to output/demo/vtest/.
#   bash scripts/demo.sh                    # whole sample video
#   bash scripts/demo.sh --max_frames 100   # extra args go to demo.py
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/install_pip.sh
bash scripts/fetch_assets.sh

export MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-4294967296}
export MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-4294967296}
export MALLOC_TOP_PAD_=${MALLOC_TOP_PAD_:-268435456}
export PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-egl}

exec .venv/bin/python demo.py --vid_file data/assets/videos/vtest.avi --output_folder output/demo "$@"
