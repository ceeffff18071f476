"""A stand-in for nvidia-ml-py's `pynvml`, for tests that run the node agent as its own process on a machine
without GPUs: the test puts this directory first on the agent's PYTHONPATH. The machine it describes is the JSON
file $AIFACILITY_FAKE_NVML names: `[{"name": "Tesla T4", "uuid": "GPU-...", "minor": 0, "memory_mib": 15360,
"watts": 70}]`. Each GPU draws its `watts` all the time, so its energy counter rises with the clock, as a real
one does. Only what the node agent calls is here."""

from __future__ import annotations

import json
import os
import time
from types import SimpleNamespace
from typing import Any

_START = time.time()


class NVMLError(Exception):
    pass


def _gpus() -> list[dict[str, Any]]:
    with open(os.environ["AIFACILITY_FAKE_NVML"]) as f:
        return list(json.load(f))


def nvmlInit() -> None:
    _gpus()


def nvmlShutdown() -> None:
    pass


def nvmlDeviceGetCount() -> int:
    return len(_gpus())


def nvmlDeviceGetHandleByIndex(i: int) -> dict[str, Any]:
    return _gpus()[i]


def nvmlDeviceGetHandleByUUID(uuid: str) -> dict[str, Any]:
    for gpu in _gpus():
        if gpu["uuid"] == uuid:
            return gpu
    raise NVMLError("Not Found")


def nvmlDeviceGetName(h: dict[str, Any]) -> str:
    return str(h["name"])


def nvmlDeviceGetUUID(h: dict[str, Any]) -> str:
    return str(h["uuid"])


def nvmlDeviceGetMinorNumber(h: dict[str, Any]) -> int:
    return int(h["minor"])


def nvmlDeviceGetMigMode(h: dict[str, Any]) -> tuple[int, int]:
    raise NVMLError("Not Supported")


def nvmlDeviceGetMemoryInfo(h: dict[str, Any]) -> Any:
    return SimpleNamespace(total=h["memory_mib"] * 2**20, used=512 * 2**20, free=(h["memory_mib"] - 512) * 2**20)


def nvmlDeviceGetUtilizationRates(h: dict[str, Any]) -> Any:
    return SimpleNamespace(gpu=42, memory=10)


def nvmlDeviceGetPowerUsage(h: dict[str, Any]) -> int:
    return int(h["watts"] * 1000)


def nvmlDeviceGetTotalEnergyConsumption(h: dict[str, Any]) -> int:
    return int(h["watts"] * 1000 * (time.time() - _START))  # W x s = J; in mJ
