"""What a batch system must offer the plugin: submit, find, query many jobs at once, cancel, capacity."""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..contract import PingResources, RetrievedPodData

# Who a pod belongs to and which group it is charged to, as the facility labels its pods.
USER_LABELS = ("aifacility.io/user", "hub.jupyter.org/username")
GROUP_LABELS = ("aifacility.io/group", "kueue.x-k8s.io/queue-name")


def labelled(labels: dict[str, str], keys: tuple[str, ...]) -> str:
    """The first of `keys` the pod is labelled with, in characters that are safe in an sbatch option or a ClassAd
    string (Kubernetes label values are; anything else is replaced, never passed on)."""
    return re.sub(r"[^A-Za-z0-9_.@-]", "_", next((labels[k] for k in keys if labels.get(k)), ""))[:128]


JobState = Literal["pending", "running", "finished"]


class BackendError(RuntimeError):
    """The batch system refused or could not be reached; the message carries its own words.

    ``uncertain`` is set when the command may have taken effect anyway (it timed out): a submission then
    must be looked up, not repeated.
    """

    def __init__(self, message: str, uncertain: bool = False) -> None:
        super().__init__(message)
        self.uncertain = uncertain


@dataclass(frozen=True)
class JobInfo:
    state: JobState
    native: str  # the batch system's own state name, for messages
    reason: str = ""  # why it is pending, or how it ended (k8s-style reason)
    message: str = ""
    exit_code: int | None = None


class Backend(abc.ABC):
    name: str
    calls: int  # batch-system commands/requests issued; benchmarks and tests read it

    @abc.abstractmethod
    def script_name(self) -> str:
        """File name of the submission file in the job dir."""

    @abc.abstractmethod
    def render(self, data: RetrievedPodData, job_dir: Path, body: str, script: Path) -> str:
        """The submission file (script or submit description) for a pod whose runner body is given."""

    @abc.abstractmethod
    async def submit(self, script: Path, job_dir: Path) -> str:
        """Submit; return the job id."""

    @abc.abstractmethod
    async def find(self, pod_uid: str) -> str | None:
        """The job id of an earlier submission for this pod (after a crash between submit and record)."""

    @abc.abstractmethod
    async def query(self, jids: list[str]) -> dict[str, JobInfo]:
        """States of many jobs with a constant number of calls; jobs the system forgot are absent."""

    @abc.abstractmethod
    async def cancel(self, jids: list[str]) -> None:
        """Ask the batch system to stop these jobs (confirmation comes from a later query)."""

    async def terminate(self, jid: str) -> bool:
        """Ask a running job to stop gracefully (the runner's TERM handler runs preStop hooks and stops each
        container); False where the backend cannot, and the job is cancelled at once."""
        return False

    @abc.abstractmethod
    async def capacity(self) -> PingResources:
        """Totals for the virtual node, never a bare 0."""

    def gpu_count(self, data: RetrievedPodData) -> int:
        from ..quantity import count, pod_resources
        from ..runner import GPU_RESOURCES

        assert data.pod.spec is not None
        res = pod_resources(data.pod.spec)
        return sum(count(res[r], r) for r in GPU_RESOURCES if r in res)
