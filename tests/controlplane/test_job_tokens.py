"""A running job's IAM token file stays fresh: the jobs service's keeper writes the owner's fresh token into the
job's token Secret while the job has not ended, and the node agent brings the file in the running pod up to date
(as the kubelet does for Secret volumes)."""

from __future__ import annotations

import base64
import time
from typing import Any

from kubernetes_asyncio import config

from aifacility.auth.jobs import TOKEN_FOR_LABEL, TOKEN_KEY
from aifacility.jobs.manifest import MANAGED_BY, OWNER_ANNOTATION
from aifacility.jobs.tokens import EXPIRES_ANNOTATION, JobTokenKeeper
from support.controlplane import Cluster

NS = "aifacility"


def _secret(name: str, token: str, job: str | None = None, expires: float | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NS}
    if job:
        meta["labels"] = {TOKEN_FOR_LABEL: job}
    if expires:
        meta["annotations"] = {EXPIRES_ANNOTATION: str(int(expires))}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta,
            "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode()}}


def _job(name: str, owner: str, *, suspend: bool) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": NS, "labels": dict(MANAGED_BY),
                         "annotations": {OWNER_ANNOTATION: owner}},
            "spec": {"suspend": suspend, "backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never", "automountServiceAccountToken": False, "containers": [
                    {"name": "c", "image": "busybox", "command": ["true"],
                     "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}}


def _token_in(cluster: Cluster, secret: str) -> str:
    return base64.b64decode(cluster.get("secret", "-n", NS, secret)["data"][TOKEN_KEY]).decode()


class FakeHub:
    """The hub's `/aifacility/token?user=` as the keeper sees it (the real endpoint: tests/auth)."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.logged_out: set[str] = set()

    async def iam_token(self, user: str) -> dict[str, Any] | None:
        self.asked.append(user)
        if user in self.logged_out:
            return None
        return {"user": user, "access_token": f"fresh-{user}-{len(self.asked)}", "expires_at": time.time() + 3600}


READ_EVERY_SECOND = "while true; do echo token=$(cat /t/token); sleep 1; done"


def _reader(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                     "securityContext": {"runAsUser": 1000, "runAsGroup": 100},
                     "containers": [{"name": "main", "image": "busybox",
                                     "command": ["sh", "-c", READ_EVERY_SECOND],
                                     "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                                     "volumeMounts": [{"name": "t", "mountPath": "/t", "readOnly": True}]}],
                     "volumes": [{"name": "t", "secret": {"secretName": "agent-token", "defaultMode": 0o444}}]}}


def test_running_pods_see_their_secret_change(cluster: Cluster) -> None:
    """Two pods mount the same Secret: both see its new value."""
    readers = ["agent-token-reader", "agent-token-reader-2"]
    cluster.apply(_secret("agent-token", "first"), *(_reader(r) for r in readers))
    try:
        for reader in readers:
            cluster.kubectl("wait", "-n", NS, "--for=jsonpath={.status.phase}=Running", f"pod/{reader}",
                            "--timeout=60s")
            _until(lambda r=reader: "token=first" in _logs(cluster, r), f"the first token in {reader}")
        cluster.apply(_secret("agent-token", "second"))
        for reader in readers:
            _until(lambda r=reader: "token=second" in _logs(cluster, r), f"the second token in {reader}", seconds=45)
    finally:
        cluster.kubectl("delete", "pod,secret", "-n", NS, *readers, "agent-token", "--wait=false",
                        "--ignore-not-found")


def _logs(cluster: Cluster, pod: str) -> str:
    return cluster.kubectl("logs", "-n", NS, pod, check=False).stdout


def _until(what: Any, label: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {label}")
        time.sleep(0.5)


async def test_the_keeper_refreshes_the_tokens_of_unfinished_jobs_only(cluster: Cluster) -> None:
    names = ["tok-waiting", "tok-ended", "tok-fresh", "tok-loggedout"]
    cluster.apply(_job("tok-ended", "carol", suspend=False))  # runs `true` and ends
    cluster.kubectl("wait", "-n", NS, "--for=condition=Complete", "job/tok-ended", "--timeout=90s")
    cluster.apply(_job("tok-waiting", "alice", suspend=True), _job("tok-fresh", "bob", suspend=True),
                  _job("tok-loggedout", "dave", suspend=True),
                  _secret("tok-waiting-token", "old", "tok-waiting"),  # expiry unknown: right after submission
                  _secret("tok-ended-token", "old", "tok-ended"),
                  _secret("tok-fresh-token", "old", "tok-fresh", expires=time.time() + 1800),
                  _secret("tok-loggedout-token", "old", "tok-loggedout", expires=time.time() + 30))
    api = await config.new_client_from_config(config_file=str(cluster.embedded.hub_kubeconfig))
    hub = FakeHub()
    hub.logged_out.add("dave")
    keeper = JobTokenKeeper(api, NS, hub, margin=100)  # type: ignore[arg-type]
    try:
        assert await keeper.refresh_due() == ["tok-waiting-token"]
        assert sorted(hub.asked) == ["alice", "dave"]
        assert _token_in(cluster, "tok-waiting-token").startswith("fresh-alice-")
        expires = float(cluster.get("secret", "-n", NS, "tok-waiting-token")["metadata"]["annotations"][
            EXPIRES_ANNOTATION])
        assert 3500 < expires - time.time() <= 3600
        for untouched in ("tok-ended-token", "tok-fresh-token", "tok-loggedout-token"):
            assert _token_in(cluster, untouched) == "old"
        # The next round has nothing to do: alice's token is fresh, and dave is not asked again at once.
        hub.asked.clear()
        assert await keeper.refresh_due() == [] and hub.asked == []
    finally:
        await api.close()
        for name in names:
            cluster.kubectl("delete", "job,secret", "-n", NS, name, f"{name}-token", "--wait=false",
                            "--ignore-not-found")
