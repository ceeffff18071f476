"""The virtual kubelets' identity and RBAC, modelled on interLink's virtual-kubelet Helm chart.

interLink's chart runs each virtual kubelet with a service account bound to a ClusterRole; here each virtual
node gets a client certificate (CN `interlink:virtual-kubelet:<node>`) in the group `interlink:virtual-kubelets`,
which one ClusterRoleBinding binds to that ClusterRole. The rules are the chart's, narrowed to what a virtual
kubelet reads and writes: its Node (taints) and Node status, the pods bound to it and their status, the
Secrets, ConfigMaps and claims those pods reference, their service-account tokens, its Lease, and Events.
"""

from __future__ import annotations

from typing import Any

CLUSTER_ROLE = "interlink-virtual-kubelet"
GROUP = "interlink:virtual-kubelets"


def user(node: str) -> str:
    return f"interlink:virtual-kubelet:{node}"


def _rule(group: str, resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": resources, "verbs": verbs}


def rbac() -> list[dict[str, Any]]:
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": CLUSTER_ROLE, "labels": {"app.kubernetes.io/name": "interlink-virtual-kubelet"}},
            "rules": [
                _rule("coordination.k8s.io", ["leases"], ["get", "list", "watch", "create", "update", "patch"]),
                _rule("", ["configmaps", "secrets", "persistentvolumeclaims"], ["get"]),
                _rule("", ["serviceaccounts/token"], ["create"]),
                _rule("", ["pods"], ["get", "list", "watch", "patch", "delete"]),
                _rule("", ["pods/status"], ["update", "patch"]),
                _rule("", ["nodes"], ["get", "list", "watch", "create", "update", "patch"]),
                _rule("", ["nodes/status"], ["update", "patch"]),
                _rule("", ["events"], ["create", "update", "patch"]),
                _rule("events.k8s.io", ["events"], ["create", "update", "patch"]),
            ]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": CLUSTER_ROLE},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CLUSTER_ROLE},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": GROUP}]}
    return [role, binding]
