"""Resource quantities in pods: numbers become quantity strings (as the API server writes them), nonsense is a 422."""

from __future__ import annotations

import pytest

from aifacility.devcluster import kinds
from aifacility.devcluster.api.validation import admission_hook
from aifacility.devcluster.store import Invalid


def pod(**limits: object) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "x", "resources": {"limits": limits,
                                                                              "requests": dict(limits)}}]}}


def test_numbers_become_canonical_strings() -> None:
    obj = pod(cpu=2.0, memory=17179869184, **{"nvidia.com/gpu": 1})
    admission_hook(kinds.POD, "CREATE", obj, None)
    res = obj["spec"]["containers"][0]["resources"]
    assert res["limits"] == {"cpu": "2", "memory": "17179869184", "nvidia.com/gpu": "1"}
    assert res["requests"]["cpu"] == "2"


def test_nonsense_quantity_names_the_field() -> None:
    with pytest.raises(Invalid) as err:
        admission_hook(kinds.POD, "CREATE", pod(cpu="lots"), None)
    assert "spec.containers[0].resources.limits[cpu]" in str(err.value)
    assert '"lots"' in str(err.value)
