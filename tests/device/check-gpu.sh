#!/usr/bin/env bash
# The real-GPU check of issue 16, on a machine with an NVIDIA GPU and its driver: discovers the GPUs, starts the
# embedded cluster with this machine as a node, runs a pod with one GPU (a small CUDA computation where PyTorch or
# CuPy is installed) and a pod without, and says whether each saw what it should. Needs no network once
# `make setup` has run (the virtualenv and the control plane's build in ~/.cache/aifacility).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/python tests/device/check_gpu.py "$@"
