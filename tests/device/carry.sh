#!/usr/bin/env bash
# Packs, on a machine with the package registries, what check-gpu-node.sh needs on a device machine that has
# Python and the NVIDIA driver but reaches no network: the wheels the node agent's GPU code imports beyond what
# such a machine has (pydantic for the facility file; PyYAML) and bubblewrap, the container sandbox. Into .device/
# (ignored by git), for the device tool's `carry`. PYTHON_VERSION: the device machine's Python (default 3.12).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=.device
rm -rf "$out" && mkdir -p "$out/wheels"
pydantic=$(grep -o '"pydantic==[^"]*"' pyproject.toml | tr -d '"')
echo "carry: wheels for Python ${PYTHON_VERSION:-3.12} ($pydantic, pyyaml)"
.venv/bin/pip download --quiet --only-binary=:all: --python-version "${PYTHON_VERSION:-3.12}" \
    --platform manylinux2014_x86_64 --implementation cp --dest "$out/wheels" "$pydantic" pyyaml
echo "carry: bubblewrap"
(cd "$out" && apt-get download bubblewrap >/dev/null)
du -sh "$out"
