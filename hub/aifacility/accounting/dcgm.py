"""GPU energy measured by NVIDIA DCGM, where the site runs the DCGM exporter (the GPU operator deploys it).

The exporter publishes `DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`, a per-GPU counter in mJ since the driver loaded,
labelled with the GPU's `UUID` and, with its Kubernetes mapping on (the GPU operator's default), the `namespace`
and `pod` the GPU is allocated to. The pod collector reads it at every sweep and adds each rise to the open
`gpu` record of that pod (Ledger.add_measured_energy). A MIG slice's samples carry the whole GPU's counter
(`GPU_I_PROFILE` set): they cannot be split between the slices' pods, so slices keep the estimate.

Reports then count a measured record's energy from the measurement, spread over its hours, instead of its
model's power figure (report.py).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

ENERGY_METRIC = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
MAX_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Sample:
    namespace: str
    pod: str
    device: str  # the GPU's UUID
    millijoules: float


class DcgmError(RuntimeError):
    """An exporter could not be read; the message says which and why."""


def parse(text: str) -> list[Sample]:
    """The energy counters of whole GPUs allocated to pods, from the exporter's Prometheus text."""
    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name not in (ENERGY_METRIC, ENERGY_METRIC + "_total"):  # the parser names a counter's samples _total
                continue
            labels = s.labels
            if labels.get("GPU_I_PROFILE") or not labels.get("pod") or not labels.get("UUID"):
                continue  # a MIG slice (the whole GPU's counter), or a GPU no pod holds
            out.append(Sample(labels.get("namespace", ""), labels["pod"], labels["UUID"], float(s.value)))
    return out


def exporter_reader(urls: list[str], timeout: float = 10.0) -> Callable[[], list[Sample]]:
    """Reads every exporter's /metrics (one per GPU node, e.g. from the GPU operator's Service endpoints)."""

    def read() -> list[Sample]:
        samples: list[Sample] = []
        for url in urls:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    samples += parse(resp.read(MAX_BYTES).decode("utf-8", "replace"))
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise DcgmError(f"cannot read the DCGM exporter at {url}: {exc}") from None
        return samples

    return read
