"""Which pod a resumed spawn may take over (resume.py): alive, made from the same options, with its token."""

from __future__ import annotations

from typing import Any

from aifacility.spawner.resume import OPTIONS_DIGEST, adoptable_token, options_digest

OPTIONS = {"profile": "mig-3g-40gb", "image": "ml", "queue": True}


def pod(**changes: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "metadata": {"name": "jupyter-alice", "annotations": {OPTIONS_DIGEST: options_digest(OPTIONS)}},
        "spec": {"schedulingGates": [{"name": "kueue.x-k8s.io/admission"}],
                 "containers": [{"name": "notebook", "env": [{"name": "POD_IP", "valueFrom": {}},
                                                             {"name": "JUPYTERHUB_API_TOKEN", "value": "t0k"}]}]},
        "status": {"phase": "Pending"},
    }
    for path, value in changes.items():
        section, key = path.split("__")
        p[section][key] = value
    return p


def test_a_queued_pod_of_the_same_options_is_taken_over_with_its_token() -> None:
    assert adoptable_token(pod(), OPTIONS) == "t0k"
    # The digest does not depend on key order (the hub may store the options in another order).
    assert adoptable_token(pod(), dict(reversed(list(OPTIONS.items())))) == "t0k"


def test_anything_else_is_left_to_kubespawner_which_replaces_it() -> None:
    assert adoptable_token(None, OPTIONS) is None  # gone
    assert adoptable_token(pod(), {**OPTIONS, "profile": "gpu-t4"}) is None  # the user chose otherwise
    assert adoptable_token(pod(metadata__annotations={}), OPTIONS) is None  # not made by a FacilitySpawner
    assert adoptable_token(pod(metadata__deletionTimestamp="2026-11-21T08:00:00Z"), OPTIONS) is None
    assert adoptable_token(pod(status__phase="Failed"), OPTIONS) is None
    assert adoptable_token(pod(spec__containers=[{"name": "notebook", "env": []}]), OPTIONS) is None  # no token
