"""Every object the facility puts on a cluster, checked against the API's schemas offline, as the API server with
strict field validation (`kubectl apply --validate=strict`) would check them before creating anything:

- what the chart's own templates render (`helm template` of the chart without its subcharts, as test_chart.py
  renders it), for each combination of values test_chart.py exercises, against kubernetes-validate's strict
  schemas of the embedded control plane's Kubernetes (`versions().kubernetes`, or the newest schema
  kubernetes-validate ships when it has none that new);
- the Kueue objects `aifacility.kueue.render` writes for the demo facility, against the openAPIV3Schema of
  Kueue's own CRDs (Kueue's chart from the Go module the embedded facility builds), made strict the same way
  (an unknown field is an error, as kube-apiserver's strict field validation makes it), their metadata against
  Kubernetes' ObjectMeta.

What the schemas cannot express stays with the cluster: Kueue's CEL rules (x-kubernetes-validations) and its
webhooks, admission (Pod Security, quotas), and names that must exist (Secrets, ServiceAccounts).
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from functools import cache
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from deploy_support import CHART
from kubernetes_validate.utils import all_versions, latest_version, major_minor, schema_contents
from packaging.version import Version
from referencing import Registry, Resource

from aifacility.embedded.controlplane.kueue_manager import helm_binary, kueue_chart_dir
from aifacility.embedded.controlplane.versions import versions
from aifacility.facility import load_facility
from aifacility.facility.loader import demo_facility_path
from aifacility.kueue import render


def schema_version() -> str:
    """The Kubernetes version to validate for: the embedded control plane's, or the newest kubernetes-validate
    has schemas for when the control plane is newer (kubernetes-validate itself picks the newest schema not
    newer than the version asked for)."""
    wanted = major_minor(versions().kubernetes.lstrip("v"))
    latest = major_minor(latest_version())
    return latest if Version(wanted) > Version(latest) else wanted


def test_the_schemas_are_those_of_the_embedded_control_plane() -> None:
    # Bumping the control plane past what kubernetes-validate knows silently validates against older APIs:
    # then upgrade kubernetes-validate (pyproject.toml) too.
    wanted = major_minor(versions().kubernetes.lstrip("v"))
    assert wanted in {major_minor(v) for v in all_versions()}, f"kubernetes-validate has no schemas for {wanted}"
    assert schema_version() == wanted


# --- the chart's own templates ----------------------------------------------------------------------------------

# (id, release namespace, helm arguments): the value combinations of test_chart.py, and all switches on at once.
COMBINATIONS = [
    ("defaults", "aifacility", ()),
    ("notebooks-in-another-namespace", "jhub", ()),
    ("client-secret-in-values", "aifacility", ("--set", "oidc.clientSecret=s3cret")),
    ("z2jh-fullname", "aifacility", ("--set", "jupyterhub.fullnameOverride=jh")),
    ("custom-service-account", "aifacility", ("--set", "jupyterhub.hub.serviceAccount.name=custom-sa")),
    ("accounting", "aifacility", ("--set", "accounting.enabled=true")),
    ("accounting-dcgm-no-dashboard", "aifacility", (
        "--set", "accounting.enabled=true", "--set", "accounting.grafanaDashboard=false", "--set-json",
        'accounting.dcgmExporterUrls=["http://10.0.0.7:9400/metrics","http://10.0.0.8:9400/metrics"]')),
    ("interlink", "aifacility", ("--set", "interlink.enabled=true")),
    ("everything-on", "aifacility-system", (
        "--set", "oidc.clientSecret=s3cret", "--set", "accounting.enabled=true", "--set", "interlink.enabled=true",
        "--set-json", 'accounting.dcgmExporterUrls=["http://10.0.0.7:9400/metrics"]')),
]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[str, dict]]]:
    """Per combination: (template file, object) for every object helm renders from the chart's own templates."""
    chart = tmp_path_factory.mktemp("chart") / "aifacility"
    shutil.copytree(CHART, chart)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    meta.pop("dependencies", None)  # helm cannot fetch the subcharts here (see test_chart.py)
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta))
    helm = helm_binary()
    out: dict[str, list[tuple[str, dict]]] = {}
    for name, namespace, args in COMBINATIONS:
        proc = subprocess.run([helm, "template", "site", str(chart), "--namespace", namespace,
                               "--kube-version", versions().kubernetes.lstrip("v"), *args],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (name, proc.stderr)
        objs = []
        for part in re.split(r"^---\s*$", proc.stdout, flags=re.MULTILINE):
            source = re.search(r"^# Source: (\S+)$", part, re.MULTILINE)
            doc = yaml.safe_load(part)
            if doc:
                assert source, part[:200]
                objs.append((source.group(1), doc))
        out[name] = objs
    return out


def _k8s_errors(obj: dict) -> list[str]:
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    try:
        kubernetes_validate.validate(obj, schema_version(), strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{where}: {'.'.join(str(p) for p in e.absolute_path)}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:  # an apiVersion the cluster does not serve
        return [f"{where}: {e.message}"]
    return []


@pytest.mark.parametrize("combination", [c[0] for c in COMBINATIONS])
def test_every_object_the_chart_renders_is_valid_kubernetes(
        rendered: dict[str, list[tuple[str, dict]]], combination: str) -> None:
    objs = rendered[combination]
    assert objs
    errors = [error for _source, obj in objs for error in _k8s_errors(obj)]
    assert not errors, "\n".join(errors)


def test_the_combinations_render_every_template_and_kind(rendered: dict[str, list[tuple[str, dict]]]) -> None:
    """A template no combination renders would be validated by nobody: add a combination with it."""
    sources = {src.rsplit("/", 1)[-1] for objs in rendered.values() for src, _ in objs}
    templates = {p.name for p in (CHART / "templates").glob("*.yaml")}
    assert templates <= sources, f"no combination renders {sorted(templates - sources)}"
    kinds = {obj["kind"] for objs in rendered.values() for _, obj in objs}
    assert {"ConfigMap", "Secret", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
            "ServiceAccount", "Deployment", "Service"} <= kinds, kinds


def _accounting_deployment(rendered: dict[str, list[tuple[str, dict]]]) -> dict:
    (deploy,) = [obj for _, obj in rendered["accounting"] if obj["kind"] == "Deployment"]
    return copy.deepcopy(deploy)


@pytest.mark.parametrize(("mistake", "needle"), [
    ("unknown-field", "serviceAcountName"),
    ("wrong-type", "'metrics' is not of type 'integer'"),
    ("missing-required", "'containers' is a required property"),
    ("removed-api", "Couldn't find schema"),
])
def test_a_wrong_object_is_rejected(rendered: dict[str, list[tuple[str, dict]]], mistake: str, needle: str) -> None:
    deploy = _accounting_deployment(rendered)
    assert _k8s_errors(deploy) == []
    pod = deploy["spec"]["template"]["spec"]
    if mistake == "unknown-field":
        pod["serviceAcountName"] = pod.pop("serviceAccountName")  # a typo: the API server would drop or refuse it
    elif mistake == "wrong-type":
        pod["containers"][0]["ports"][0]["containerPort"] = "metrics"
    elif mistake == "missing-required":
        del pod["containers"]
    else:
        deploy["apiVersion"] = "extensions/v1beta1"  # Deployments left it in Kubernetes 1.16
    errors = _k8s_errors(deploy)
    assert any(needle in e for e in errors), errors


# --- the facility's Kueue objects ---------------------------------------------------------------------------------

def _crd_manifest(text: str) -> str:
    """A CRD of Kueue's chart with the helm template lines taken out (only the schemas are read)."""
    text = re.sub(r"\{\{-?\s*/\*.*?\*/\s*-?\}\}", "", text, flags=re.DOTALL)  # comment blocks
    lines = [line for line in text.splitlines() if not line.strip().startswith("{{")]  # control lines
    return re.sub(r"\{\{.*?\}\}", "x", "\n".join(lines))  # expressions inside values


def _strict(node: Any) -> Any:
    """An openAPIV3Schema as kube-apiserver applies it with strict field validation, in JSON Schema: unknown
    fields are errors (where the schema neither allows extra keys nor preserves unknown fields), and `nullable`
    admits null."""
    if isinstance(node, list):
        return [_strict(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: (v if k in ("enum", "default", "example") else
               {p: _strict(s) for p, s in v.items()} if k == "properties" else _strict(v))
           for k, v in node.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


K8S_DEFINITIONS = "https://kubernetes.io/api/_definitions.json"


@cache
def _k8s_registry() -> Registry:
    full = [v for v in all_versions() if major_minor(v) == schema_version()][-1]  # e.g. 1.36.0
    defs = schema_contents(f"kubernetes-json-schema/v{full}-local-strict/_definitions.json", full)
    return Resource.from_contents(defs) @ Registry()


@cache
def kueue_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the strict JSON Schema of every version Kueue's CRDs serve."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted((kueue_chart_dir() / "templates" / "crd").glob("*.yaml")):
        crd = yaml.safe_load(_crd_manifest(path.read_text()))
        assert crd["kind"] == "CustomResourceDefinition", path
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version["served"]:
                continue
            schema = _strict(version["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = {"$ref": f"{K8S_DEFINITIONS}#/$defs/"
                                                        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
            schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
            schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def _kueue_errors(obj: dict) -> list[str]:
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    schema = kueue_schemas().get((obj.get("apiVersion", ""), obj.get("kind", "")))
    if schema is None:
        return [f"{where}: Kueue {versions().kueue} serves no {obj.get('apiVersion')} {obj.get('kind')}"]
    validator = jsonschema.Draft202012Validator(schema, registry=_k8s_registry())
    return [f"{where}: {'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
            for e in validator.iter_errors(obj)]


@pytest.fixture(scope="module")
def kueue_objects() -> list[dict]:
    objs = render(load_facility(demo_facility_path()))
    assert objs, "the demo facility renders no Kueue objects"
    return objs


def test_kueue_s_crds_give_the_schemas_of_the_objects_the_facility_renders(kueue_objects: list[dict]) -> None:
    assert {("kueue.x-k8s.io/v1beta2", k) for k in (
        "ResourceFlavor", "ClusterQueue", "LocalQueue", "WorkloadPriorityClass", "Workload")} <= set(kueue_schemas())
    assert {o["kind"] for o in kueue_objects} == {"ResourceFlavor", "ClusterQueue", "LocalQueue",
                                                  "WorkloadPriorityClass"}


def test_every_kueue_object_of_the_demo_facility_is_valid(kueue_objects: list[dict]) -> None:
    errors = [error for obj in kueue_objects for error in _kueue_errors(obj)]
    assert not errors, "\n".join(errors)
    # Cluster-scoped objects have no namespace; LocalQueues live in the facility's namespace.
    for obj in kueue_objects:
        assert ("namespace" in obj["metadata"]) == (obj["kind"] == "LocalQueue"), obj["metadata"]


@pytest.mark.parametrize(("mistake", "needle"), [
    ("v1beta1-field-name", "'cohort' was unexpected"),  # v1beta2 renamed it cohortName
    ("bad-enum", "'FIFO' is not one of"),
    ("bad-quantity", "does not match"),
    ("bad-metadata", "'labelz' was unexpected"),
    ("old-version", "serves no kueue.x-k8s.io/v1alpha1 ClusterQueue"),
])
def test_a_wrong_kueue_object_is_rejected(kueue_objects: list[dict], mistake: str, needle: str) -> None:
    cq = copy.deepcopy(next(o for o in kueue_objects if o["kind"] == "ClusterQueue"))
    assert _kueue_errors(cq) == []
    if mistake == "v1beta1-field-name":
        cq["spec"]["cohort"] = cq["spec"].pop("cohortName")
    elif mistake == "bad-enum":
        cq["spec"]["queueingStrategy"] = "FIFO"
    elif mistake == "bad-quantity":
        cq["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]["nominalQuota"] = "lots"
    elif mistake == "bad-metadata":
        cq["metadata"]["labelz"] = cq["metadata"].pop("labels")
    else:
        cq["apiVersion"] = "kueue.x-k8s.io/v1alpha1"
    errors = _kueue_errors(cq)
    assert any(needle in e for e in errors), errors


def test_the_crd_manifests_parse_without_helm() -> None:
    # The template lines are the only thing taken out: a CRD's schema comes through whole.
    path = kueue_chart_dir() / "templates" / "crd" / "kueue.x-k8s.io_localqueues.yaml"
    crd = yaml.safe_load(_crd_manifest(path.read_text()))
    assert crd["metadata"]["name"] == "localqueues.kueue.x-k8s.io"
    served = [v["name"] for v in crd["spec"]["versions"] if v["served"]]
    assert "v1beta2" in served
