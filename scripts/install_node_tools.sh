#!/usr/bin/env bash
# Install the node tools the tests use (the Khronos glTF validator) into .node/.
# Idempotent: skips npm when the package is already there. Needs node + npm.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "install_node_tools.sh: node/npm not found; GLB validator tests will be skipped" >&2
    exit 0
fi
if [ -f .node/node_modules/gltf-validator/package.json ]; then
    echo "gltf-validator already installed in .node/"
    exit 0
fi
mkdir -p .node
# A failed install (e.g. no registry access) must not stop scripts/test.sh: the
# validator tests then skip with a reason (and fail in CI, see tests/conftest.py).
if npm install --no-audit --no-fund --silent --prefix .node gltf-validator; then
    echo "gltf-validator installed in .node/"
else
    echo "install_node_tools.sh: npm install gltf-validator failed; GLB validator tests will be skipped" >&2
fi
