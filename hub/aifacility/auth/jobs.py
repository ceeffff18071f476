"""How an offloaded job receives the session's IAM token when it starts.

The jobs client (in the session, or the hub service submitting for it) reads the session's token file and
creates, next to the job, a Secret holding a copy; the job's pod mounts it read-only at the same path as in
the session and finds it through the WLCG `BEARER_TOKEN_FILE` variable, so code behaves the same in both.
While the job has not ended, the jobs service writes fresh tokens into the Secret (`aifacility.jobs.tokens`), and
the kubelet brings the file in the pod up to date.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from aifacility.facility.model import is_dns_label

TOKEN_KEY = "token"
TOKEN_FOR_LABEL = "aifacility.io/token-for"  # on the Secret: the job whose token it holds
# A hub-managed service holding this scope may read any user's fresh IAM token (`GET /hub/api/aifacility/token
# ?user=NAME`): the jobs service, which keeps running jobs' token files fresh (it already creates those jobs with
# the hub's own cluster identity).
IAM_TOKENS_SCOPE = "custom:iam-tokens:read"
IAM_TOKENS_SCOPE_MODEL = {"description": "Read any user's fresh IAM access token (for the jobs service, which "
                                         "keeps running jobs' token files fresh)."}


def read_session_token(path: str | os.PathLike[str] | None = None) -> str:
    """The session's current access token (from `$AIFACILITY_TOKEN_FILE`), or a readable error."""
    where = Path(path or os.environ.get("AIFACILITY_TOKEN_FILE", ""))
    if not str(where) or str(where) == ".":
        raise RuntimeError("AIFACILITY_TOKEN_FILE is not set: this is not an aifacility session with IAM tokens")
    try:
        token = where.read_text().strip()
    except OSError as e:
        raise RuntimeError(f"cannot read the session's token file {where}: {e.strerror}") from None
    if not token:
        raise RuntimeError(f"the session's token file {where} is empty; the hub has not delivered a token yet")
    return token


def job_token_secret(job_name: str, namespace: str, token: str, *,
                     token_file: str = "/tmp/aifacility/token") -> dict[str, Any]:
    """The Secret, pod volume, container mount and env that give a job's pod the token at `token_file`.

    Returns {"secret": <v1 Secret>, "volume": ..., "volume_mount": ..., "env": [...]}; the Secret is named
    `<job_name>-token` and should carry an ownerReference to the Job so Kubernetes deletes it with the job.
    """
    name = f"{job_name}-token"
    if not is_dns_label(name):
        raise ValueError(f"'{job_name}' gives the Secret name '{name}', which is not a valid Kubernetes name")
    if not token.strip():
        raise ValueError("the token is empty")
    path = Path(token_file)
    return {
        "secret": {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/part-of": "aifacility", TOKEN_FOR_LABEL: job_name}},
            "data": {TOKEN_KEY: base64.b64encode(token.strip().encode()).decode()},
        },
        "volume": {"name": "aifacility-token", "secret": {
            "secretName": name, "defaultMode": 0o400, "items": [{"key": TOKEN_KEY, "path": path.name}]}},
        "volume_mount": {"name": "aifacility-token", "mountPath": str(path.parent), "readOnly": True},
        "env": [{"name": "BEARER_TOKEN_FILE", "value": str(path)},
                {"name": "AIFACILITY_TOKEN_FILE", "value": str(path)}],
    }
