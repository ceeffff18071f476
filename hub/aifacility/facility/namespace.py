"""The facility's notebook namespace as every installation creates it (`aifacility up`, the Ansible role, or by
hand with `aifacility render namespace | kubectl apply -f -`).

Its labels are the facility's contract with two cluster-wide admission controllers:
- Pod Security: baseline enforced (no host paths, host network, privileged containers or added capabilities), so
  a pod spec that slips past the spawner still cannot take the node; warnings and audit at restricted;
- Kueue: `aifacility.io/kueue: managed` is what Kueue's managedJobsNamespaceSelector (charts/kueue-values.yaml)
  selects, so queued sessions are gated and Jobs suspended in this namespace, and Kueue touches no other.
"""

from __future__ import annotations

from typing import Any

KUEUE_MANAGED_LABEL = ("aifacility.io/kueue", "managed")


def notebook_namespace(name: str) -> dict[str, Any]:
    """The Namespace object of the facility's notebooks and jobs."""
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {
        "pod-security.kubernetes.io/enforce": "baseline",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/audit": "restricted",
        KUEUE_MANAGED_LABEL[0]: KUEUE_MANAGED_LABEL[1],
    }}}
