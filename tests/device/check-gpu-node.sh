#!/usr/bin/env bash
# The node agent's part of the real-GPU check (check_gpu_node.py), for a machine with Python and the NVIDIA driver
# but not this project's build and no network, such as the device machines lent to these tasks. Prepare on a
# machine with the registries: `tests/device/carry.sh`, then carry `.device` along. PYTHON: the interpreter
# (default python3; the one with PyTorch or CuPy, if any, runs the CUDA computation).
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-python3}
deps=$(mktemp -d)
if ! "$python" -c "import pydantic, yaml" 2>/dev/null; then  # the wheels carry.sh packed
    [ -d .device/wheels ] || { echo "check-gpu-node: $python has no pydantic, and there is no .device/wheels (run tests/device/carry.sh)" >&2; exit 2; }
    "$python" -m pip install --quiet --no-index --find-links .device/wheels --target "$deps" pydantic pyyaml
fi
if [ ! -x /usr/bin/bwrap ]; then
    deb=$(ls .device/bubblewrap_*.deb 2>/dev/null | head -1)
    [ -n "$deb" ] || { echo "check-gpu-node: no /usr/bin/bwrap, and no .device/bubblewrap_*.deb (run tests/device/carry.sh)" >&2; exit 2; }
    dpkg -x "$deb" "$deps/bubblewrap" && install -m 0755 "$deps/bubblewrap/usr/bin/bwrap" /usr/bin/bwrap
fi
export PYTHONPATH="$PWD/hub:$PWD/extensions:$deps${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" tests/device/check_gpu_node.py
