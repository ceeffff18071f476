"""The scheduler: binds pending pods to nodes the way kube-scheduler's default profile does.

Filters, in kube-scheduler's order (the first one that fails a node is that node's reason, as upstream):
NodeUnschedulable, TaintToleration, NodeAffinity (nodeSelector + required affinity), NodeResourcesFit.
Scoring: least allocated (cpu and memory), ties broken by node name, so decisions are reproducible.

Every round runs without awaiting between reading the cluster and binding, on the single event loop, so two
pods can never both take the last GPU however many are created at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aifacility.devcluster import kinds
from aifacility.devcluster.agent.events import EventRecorder, now
from aifacility.devcluster.agent.informer import Trigger, cancel_all, follow
from aifacility.devcluster.selectors import SelectorError, matches_label_selector_dict
from aifacility.devcluster.store import NotFound, Store, StoreError
from aifacility.facility.quantity import parse_quantity

log = logging.getLogger(__name__)

TERMINAL_PHASES = ("Succeeded", "Failed")
SCHEDULER_NAME = "default-scheduler"


def _quantity(value: Any) -> Decimal:
    try:
        return parse_quantity(value)
    except ValueError:
        return Decimal(0)


def _requests_of(container: Mapping[str, Any]) -> dict[str, Decimal]:
    """A container's requests; a limit stands for an absent request (the API server's defaulting)."""
    res = container.get("resources") or {}
    out = {k: _quantity(v) for k, v in (res.get("limits") or {}).items()}
    out.update({k: _quantity(v) for k, v in (res.get("requests") or {}).items()})
    return out


def pod_requests(pod: Mapping[str, Any]) -> dict[str, Decimal]:
    """What a pod takes from its node: max(sum of containers + sidecars, each init container) + overhead."""
    spec = pod.get("spec") or {}
    total: dict[str, Decimal] = {}
    for c in spec.get("containers") or []:
        for k, v in _requests_of(c).items():
            total[k] = total.get(k, Decimal(0)) + v
    sidecars: dict[str, Decimal] = {}
    for c in spec.get("initContainers") or []:
        req = _requests_of(c)
        if c.get("restartPolicy") == "Always":  # a sidecar keeps running next to the containers
            for k, v in req.items():
                total[k] = total.get(k, Decimal(0)) + v
                sidecars[k] = sidecars.get(k, Decimal(0)) + v
            continue
        for k, v in req.items():
            # An ordinary init container runs alone (besides the sidecars started before it).
            total[k] = max(total.get(k, Decimal(0)), v + sidecars.get(k, Decimal(0)))
    for k, v in (spec.get("overhead") or {}).items():
        total[k] = total.get(k, Decimal(0)) + _quantity(v)
    return {k: v for k, v in total.items() if v > 0}


def node_allocatable(node: Mapping[str, Any]) -> dict[str, Decimal]:
    status = node.get("status") or {}
    alloc = status.get("allocatable") or status.get("capacity") or {}
    return {k: _quantity(v) for k, v in alloc.items()}


def tolerates(taint: Mapping[str, Any], tolerations: Iterable[Mapping[str, Any]]) -> bool:
    for t in tolerations:
        effect = t.get("effect") or ""
        if effect and effect != taint.get("effect"):
            continue
        key = t.get("key") or ""
        op = t.get("operator") or "Equal"
        if op == "Exists":
            if not key or key == taint.get("key"):
                return True
        elif key == taint.get("key") and (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def untolerated_taint(node: Mapping[str, Any], pod: Mapping[str, Any]) -> dict[str, Any] | None:
    """The first NoSchedule/NoExecute taint the pod does not tolerate (PreferNoSchedule only scores)."""
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not tolerates(taint, tolerations):
            return dict(taint)
    return None


def _match_requirement(expr: Mapping[str, Any], value: str | None) -> bool:
    op = expr.get("operator")
    values = expr.get("values") or []
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt"):
        if value is None or len(values) != 1:
            return False
        try:
            have, want = int(value), int(values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return False


def _match_term(term: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return False  # an empty term matches no node (upstream semantics)
    labels = (node.get("metadata") or {}).get("labels") or {}
    for e in exprs:
        if not _match_requirement(e, labels.get(e.get("key", ""))):
            return False
    for f in fields:
        value = (node.get("metadata") or {}).get("name") if f.get("key") == "metadata.name" else None
        if not _match_requirement(f, value):
            return False
    return True


def matches_node_selector(pod: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """nodeSelector AND requiredDuringSchedulingIgnoredDuringExecution (its terms ORed)."""
    spec = pod.get("spec") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    for k, v in (spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if required is not None:
        return any(_match_term(t, node) for t in required.get("nodeSelectorTerms") or [])
    return True


@dataclass
class NodeState:
    """A node and what the pods bound to it already take."""

    node: dict[str, Any]
    allocatable: dict[str, Decimal]
    requested: dict[str, Decimal] = field(default_factory=dict)
    pods: int = 0
    # The pods bound here (for inter-pod affinity): metadata and affinity only.
    residents: list[Mapping[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.node["metadata"]["name"])

    def add(self, requests: Mapping[str, Decimal], pod: Mapping[str, Any] | None = None) -> None:
        for k, v in requests.items():
            self.requested[k] = self.requested.get(k, Decimal(0)) + v
        self.pods += 1
        if pod is not None:
            self.residents.append(pod)

    def label(self, key: str) -> str | None:
        value = ((self.node.get("metadata") or {}).get("labels") or {}).get(key)
        return None if value is None else str(value)

    def score(self, requests: Mapping[str, Decimal]) -> Decimal:
        """kube-scheduler's LeastAllocated score (0..100) after placing the pod: free cpu and memory share."""
        total = Decimal(0)
        for res in ("cpu", "memory"):
            cap = self.allocatable.get(res, Decimal(0))
            if cap <= 0:
                continue
            used = self.requested.get(res, Decimal(0)) + requests.get(res, Decimal(0))
            total += (cap - used) * 100 / cap
        return total / 2


# Why a node was rejected, with whether preemption could ever help (it cannot for taints or selectors).
@dataclass(frozen=True)
class Rejection:
    reasons: tuple[str, ...]
    resolvable: bool


def _term_selects(term: Mapping[str, Any], owner_namespace: str, other: Mapping[str, Any]) -> bool:
    """Whether a pod (anti-)affinity term selects `other` (a null labelSelector selects nothing)."""
    meta = other.get("metadata") or {}
    namespaces = term.get("namespaces") or []
    ns_selector = term.get("namespaceSelector")
    if ns_selector is None:
        in_scope = meta.get("namespace") in (namespaces or [owner_namespace])
    else:
        # Namespace labels are not consulted: {} (all namespaces) and explicit names are what is emulated.
        in_scope = ns_selector == {} or meta.get("namespace") in namespaces
    selector = term.get("labelSelector")
    if not in_scope or selector is None:
        return False
    try:
        return matches_label_selector_dict(meta.get("labels") or {}, selector)
    except SelectorError:
        return False


def _required_terms(pod: Mapping[str, Any], kind: str) -> list[Mapping[str, Any]]:
    affinity = ((pod.get("spec") or {}).get("affinity") or {}).get(kind) or {}
    return list(affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or [])


def inter_pod_rejection(pod: Mapping[str, Any], state: NodeState, states: list[NodeState]) -> Rejection | None:
    """Required pod affinity / anti-affinity (InterPodAffinity), including existing pods' anti-affinity."""
    ns = str((pod.get("metadata") or {}).get("namespace") or "default")

    def same_domain(key: str) -> list[NodeState]:
        value = state.label(key)
        return [] if value is None else [s for s in states if s.label(key) == value]

    # Upstream's order: the pod's affinity, its anti-affinity, then the anti-affinity of pods already there.
    for term in _required_terms(pod, "podAffinity"):
        domain = same_domain(str(term.get("topologyKey", "")))
        if any(_term_selects(term, ns, other) for s in domain for other in s.residents):
            continue
        # Upstream's exception: the first pod of a group that selects itself may go anywhere it could,
        # provided no pod anywhere matches yet.
        anywhere = any(_term_selects(term, ns, other) for s in states for other in s.residents)
        if not anywhere and _term_selects(term, ns, pod) and state.label(str(term.get("topologyKey", ""))):
            continue
        return Rejection(("node(s) didn't match pod affinity rules",), False)
    for term in _required_terms(pod, "podAntiAffinity"):
        for s in same_domain(str(term.get("topologyKey", ""))):
            if any(_term_selects(term, ns, other) for other in s.residents):
                return Rejection(("node(s) didn't match pod anti-affinity rules",), True)
    for resident_state in states:
        for other in resident_state.residents:
            other_ns = str((other.get("metadata") or {}).get("namespace") or "default")
            for term in _required_terms(other, "podAntiAffinity"):
                key = str(term.get("topologyKey", ""))
                if state.label(key) is not None and resident_state.label(key) == state.label(key) \
                        and _term_selects(term, other_ns, pod):
                    return Rejection(("node(s) didn't satisfy existing pods anti-affinity rules",), True)
    return None


def filter_node(pod: Mapping[str, Any], requests: Mapping[str, Decimal], state: NodeState,
                states: list[NodeState] | None = None) -> Rejection | None:
    node = state.node
    if (node.get("spec") or {}).get("unschedulable"):
        tolerations = (pod.get("spec") or {}).get("tolerations") or []
        cordon = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
        if not tolerates(cordon, tolerations):
            return Rejection(("node(s) were unschedulable",), False)
    taint = untolerated_taint(node, pod)
    if taint is not None:
        value = taint.get("value")
        shown = f"{taint.get('key')}: {value}" if value else str(taint.get("key"))
        return Rejection((f"node(s) had untolerated taint {{{shown}}}",), False)
    if not matches_node_selector(pod, node):
        return Rejection(("node(s) didn't match Pod's node affinity/selector",), False)
    reasons: list[str] = []
    max_pods = state.allocatable.get("pods")
    if max_pods is not None and state.pods + 1 > max_pods:
        reasons.append("Too many pods")
    for res in sorted(requests):
        want = requests[res]
        free = state.allocatable.get(res, Decimal(0)) - state.requested.get(res, Decimal(0))
        if want > free:
            reasons.append(f"Insufficient {res}")
    if reasons:
        return Rejection(tuple(reasons), True)
    return inter_pod_rejection(pod, state, states if states is not None else [state])


def unschedulable_message(total_nodes: int, rejections: Iterable[Rejection]) -> str:
    """`0/N nodes are available: ...` exactly in kube-scheduler's format (reasons sorted as strings)."""
    reasons: Counter[str] = Counter()
    victims = no_help = 0
    for r in rejections:
        for reason in r.reasons:
            reasons[reason] += 1
        if r.resolvable:
            victims += 1
        else:
            no_help += 1
    histogram = sorted(f"{n} {reason}" for reason, n in reasons.items())
    msg = f"0/{total_nodes} nodes are available"
    msg += f": {', '.join(histogram)}." if histogram else "."
    post: list[str] = []
    if victims:
        post.append(f"{victims} No preemption victims found for incoming pod")
    if no_help:
        post.append(f"{no_help} Preemption is not helpful for scheduling")
    if post:
        msg += f" preemption: 0/{total_nodes} nodes are available: {', '.join(sorted(post))}."
    return msg


def choose_node(pod: Mapping[str, Any], states: list[NodeState]) -> tuple[NodeState | None, str]:
    """The node to bind to (None when none fits) and, when none does, the FailedScheduling message."""
    requests = pod_requests(pod)
    fitting: list[NodeState] = []
    rejections: list[Rejection] = []
    for state in states:
        rejection = filter_node(pod, requests, state, states)
        if rejection is None:
            fitting.append(state)
        else:
            rejections.append(rejection)
    if not fitting:
        return None, unschedulable_message(len(states), rejections)
    best = min(fitting, key=lambda s: (-s.score(requests), s.name))
    return best, ""


def _resident(pod: Mapping[str, Any]) -> dict[str, Any]:
    return {"metadata": pod.get("metadata") or {}, "spec": {"affinity": (pod.get("spec") or {}).get("affinity")}}


def is_pending(pod: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    meta = pod.get("metadata") or {}
    return (not spec.get("nodeName") and not meta.get("deletionTimestamp")
            and (spec.get("schedulerName") or SCHEDULER_NAME) == SCHEDULER_NAME
            and (pod.get("status") or {}).get("phase", "Pending") not in TERMINAL_PHASES)


def occupies_node(pod: Mapping[str, Any]) -> bool:
    """Pods bound to a node hold their resources until they end (or are gone), as in kube-scheduler."""
    return bool((pod.get("spec") or {}).get("nodeName")) and \
        (pod.get("status") or {}).get("phase") not in TERMINAL_PHASES


def pod_sort_key(pod: Mapping[str, Any]) -> tuple[int, str, str]:
    meta = pod.get("metadata") or {}
    return (-int((pod.get("spec") or {}).get("priority") or 0), meta.get("creationTimestamp") or "",
            f"{meta.get('namespace')}/{meta.get('name')}")


def node_states(nodes: Iterable[dict[str, Any]], pods: Iterable[Mapping[str, Any]]) -> list[NodeState]:
    states = {n["metadata"]["name"]: NodeState(n, node_allocatable(n)) for n in nodes}
    for p in pods:
        if occupies_node(p):
            state = states.get(p["spec"]["nodeName"])
            if state is not None:
                state.add(pod_requests(p), _resident(p))
    return sorted(states.values(), key=lambda s: s.name)


def _set_condition(status: dict[str, Any], cond: dict[str, Any]) -> None:
    conds = status.setdefault("conditions", [])
    for i, c in enumerate(conds):
        if c.get("type") == cond["type"]:
            if c.get("status") == cond.get("status"):
                cond["lastTransitionTime"] = c.get("lastTransitionTime") or cond.get("lastTransitionTime")
            conds[i] = cond
            return
    conds.append(cond)


class Scheduler:
    """Controller: one scheduling round whenever pods or nodes change (coalesced)."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[Any]] = []
        self._trigger = Trigger()
        self._store: Store | None = None
        self._events: EventRecorder | None = None
        self._seen: dict[str, tuple[Any, ...]] = {}  # pod uid -> what scheduling looks at
        self.rounds = 0

    async def start(self, cluster: Any) -> None:
        self._store = cluster.store
        self._events = EventRecorder(cluster.store, SCHEDULER_NAME)
        self._tasks.append(asyncio.create_task(follow(cluster.store, kinds.POD, self._pod_changed)))
        for kind in (kinds.NODE, kinds.PVC):
            self._tasks.append(asyncio.create_task(follow(cluster.store, kind, self._changed)))
        self._tasks.append(asyncio.create_task(self._loop()))

    async def stop(self) -> None:
        await cancel_all(self._tasks)

    def _changed(self, _type: str, _obj: dict[str, Any]) -> None:
        self._trigger.fire()

    def _pod_changed(self, event: str, pod: dict[str, Any]) -> None:
        """A round only when a pod's scheduling-relevant state changed, not at every status update of a
        running pod (the node agent writes many), so rounds stay rare however many pods run."""
        uid = pod["metadata"].get("uid", "")
        if event == "DELETED":
            self._seen.pop(uid, None)
            self._trigger.fire()
            return
        spec = pod.get("spec") or {}
        key = (spec.get("nodeName"), (pod.get("status") or {}).get("phase") in TERMINAL_PHASES,
               bool(spec.get("schedulingGates")), bool(pod["metadata"].get("deletionTimestamp")))
        if self._seen.get(uid) != key:
            self._seen[uid] = key
            self._trigger.fire()

    async def _loop(self) -> None:
        while True:
            await self._trigger.wait()
            try:
                self.schedule_round()
            except Exception:
                log.exception("scheduling round failed")
            # Let a burst of creates land before the next round (they are coalesced into it).
            await asyncio.sleep(0.01)

    def schedule_round(self) -> None:
        """Bind every pending pod that fits; synchronous, so nothing else writes in between."""
        assert self._store is not None
        self.rounds += 1
        pods, _ = self._store.list(kinds.POD)
        pending = sorted((p for p in pods if is_pending(p)), key=pod_sort_key)
        if not pending:
            return
        nodes, _ = self._store.list(kinds.NODE)
        states = node_states(nodes, pods)
        for pod in pending:
            if (pod.get("spec") or {}).get("schedulingGates"):
                self._gated(pod)
                continue
            missing = self._missing_claim(pod)
            if missing:
                msg = unschedulable_message(len(states), [Rejection((), False)] * len(states))
                msg = msg.replace("nodes are available.", f"nodes are available: {missing}.", 1)
                self._unschedulable(pod, msg)
                continue
            best, message = choose_node(pod, states)
            if best is None:
                self._unschedulable(pod, message)
                continue
            if self._bind(pod, best.name):
                best.add(pod_requests(pod), _resident(pod))

    def _missing_claim(self, pod: dict[str, Any]) -> str:
        assert self._store is not None
        ns = pod["metadata"].get("namespace")
        for vol in (pod.get("spec") or {}).get("volumes") or []:
            claim = (vol.get("persistentVolumeClaim") or {}).get("claimName")
            if claim:
                try:
                    self._store.get(kinds.PVC, ns, claim)
                except NotFound:
                    return f'persistentvolumeclaim "{claim}" not found'
        return ""

    def _gated(self, pod: dict[str, Any]) -> None:
        self._update_condition(pod, "SchedulingGated", "Scheduling is blocked due to non-empty scheduling gates")

    def _unschedulable(self, pod: dict[str, Any], message: str) -> None:
        if self._update_condition(pod, "Unschedulable", message):
            assert self._events is not None
            self._events.record(pod, "FailedScheduling", message, type="Warning")

    def _update_condition(self, pod: dict[str, Any], reason: str, message: str) -> bool:
        """Set PodScheduled=False; True when it changed (so an unchanged retry writes nothing)."""
        assert self._store is not None
        for c in (pod.get("status") or {}).get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("reason") == reason and c.get("message") == message:
                return False
        cond = {"type": "PodScheduled", "status": "False", "reason": reason, "message": message,
                "lastProbeTime": None, "lastTransitionTime": now()}

        def fn(p: dict[str, Any]) -> None:
            status = p.setdefault("status", {})
            status.setdefault("phase", "Pending")
            _set_condition(status, cond)

        try:
            self._store.modify(kinds.POD, pod["metadata"].get("namespace"), pod["metadata"]["name"], fn,
                               subresource="status")
        except StoreError:
            return False
        return True

    def _bind(self, pod: dict[str, Any], node: str) -> bool:
        assert self._store is not None and self._events is not None
        ns, name = pod["metadata"].get("namespace"), pod["metadata"]["name"]
        try:
            bound = bind_pod(self._store, ns, name, node)
        except (StoreError, AlreadyBound) as e:
            log.info("binding %s/%s to %s failed: %s", ns, name, node, e)
            return False
        self._events.record(bound, "Scheduled", f"Successfully assigned {ns}/{name} to {node}")
        return True


class AlreadyBound(Exception):
    """Someone bound the pod between the round's read and its write."""


def bind_pod(store: Store, namespace: str, name: str, node: str) -> dict[str, Any]:
    """The Binding subresource's effect: spec.nodeName, then PodScheduled=True."""

    def set_node(p: dict[str, Any]) -> None:
        if p["spec"].get("nodeName"):
            raise AlreadyBound(f"pod {namespace}/{name} is already assigned to node {p['spec']['nodeName']}")
        p["spec"]["nodeName"] = node

    store.modify(kinds.POD, namespace, name, set_node)

    def set_status(p: dict[str, Any]) -> None:
        status = p.setdefault("status", {})
        status.setdefault("phase", "Pending")
        _set_condition(status, {"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                                "lastTransitionTime": now()})

    return store.modify(kinds.POD, namespace, name, set_status, subresource="status")
