"""The umbrella chart: metadata, values against both schemas and the facility model, and helm's rendering.

helm cannot fetch the four subcharts here (their repositories are not reachable), so `helm lint`/`template` run
on a copy of the chart without its `dependencies:`: that renders and checks the umbrella's own templates and
values schema; the subcharts' values are checked against their schemas by the tests below (z2jh) instead.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from deploy_support import CHART, REPO, SHARED

from aifacility.facility import load_facility
from aifacility.facility.model import Facility
from aifacility.facility.quantity import parse_quantity

Z2JH_SCHEMA = SHARED / "schemas" / "z2jh-4.4.0" / "values.schema.yaml"


def test_chart_metadata_names_the_three_subcharts_kueue_is_its_own_release() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    deps = {d.get("alias", d["name"]): d for d in chart["dependencies"]}
    assert deps["jupyterhub"] == {"name": "jupyterhub", "alias": "jupyterhub", "version": "4.4.0",
                                  "repository": "https://hub.jupyter.org/helm-chart/"}
    assert deps["dask-gateway"]["version"] == "2026.3.0"
    assert deps["dask-gateway"]["repository"] == "https://helm.dask.org"
    # Kueue's CRDs and webhooks are cluster-wide: a subchart would lose every queue at `helm uninstall`.
    assert "kueue" not in deps
    assert deps["interlink"]["repository"] == "https://interlink-hq.github.io/interlink-helm-chart/"
    assert deps["interlink"]["condition"] == "interlink.enabled"


def _schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text())


def test_values_validate_against_the_chart_schema(values: dict) -> None:
    schema = _schema()
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    jsonschema.Draft7Validator(schema).validate(values)


@pytest.mark.parametrize(("path", "value", "needle"), [
    (("facility", "profiles", 0, "gpus"), 1, "'gpus' was unexpected"),
    (("facility", "accelerators", 0, "kind"), "tpu", "'tpu' is not one of"),
    (("jupyterhubb",), {}, "'jupyterhubb' was unexpected"),
    (("oidc", "clientSecret"), 42, "42 is not of type 'string'"),
])
def test_the_chart_schema_refuses_mistakes(values: dict, path: tuple, value: Any, needle: str) -> None:
    bad = copy.deepcopy(values)
    node = bad
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    errors = [e.message for e in jsonschema.Draft7Validator(_schema()).iter_errors(bad)]
    assert any(needle in m for m in errors), errors


def test_the_facility_block_is_a_valid_facility(values: dict, tmp_path: Path) -> None:
    facility = Facility.model_validate(values["facility"])
    assert facility.iam.issuer == "https://iam.example.org/"
    # The same through the loader the hub uses, from a file as the ConfigMap mounts it.
    path = tmp_path / "facility.yaml"
    path.write_text(yaml.safe_dump(values["facility"]))
    assert load_facility(path) == facility


def test_the_facility_block_is_the_demo_with_site_values(values: dict) -> None:
    # The block is generated from the demo facility (tests/deploy/chart_sources.py --write); whatever the demo
    # holds when it was last generated, the site values must be production ones.
    facility = values["facility"]
    assert facility["iam"]["issuer"] == "https://iam.example.org/"
    assert {i["image"] for i in facility["images"]} == {
        "registry.example.org/aifacility/notebook-ml:0.1.0", "registry.example.org/aifacility/notebook-hep:0.1.0"}
    assert "SET THIS" in (CHART / "values.yaml").read_text().split("issuer:", 1)[1].splitlines()[0]


def test_the_generator_reproduces_the_chart_s_site_values(values: dict) -> None:
    from chart_sources import facility_block

    generated = yaml.safe_load("facility:\n" + facility_block())["facility"]
    assert generated["name"] == values["facility"]["name"] == "aifacility"
    assert generated["iam"]["issuer"] == values["facility"]["iam"]["issuer"]
    assert [i["image"] for i in generated["images"]] == [i["image"] for i in values["facility"]["images"]]
    Facility.model_validate(generated)


def _without_required(node: Any) -> Any:
    if isinstance(node, dict):
        # `required` the keyword is a list; a property that happens to be called "required" is a schema (dict).
        return {k: _without_required(v) for k, v in node.items() if not (k == "required" and isinstance(v, list))}
    if isinstance(node, list):
        return [_without_required(v) for v in node]
    return node


def test_the_jupyterhub_block_validates_against_z2jh_4_4_0(values: dict) -> None:
    # Helm validates the subchart's values merged over z2jh's own defaults, which provide every key z2jh marks
    # `required`; our block is an override of those defaults, so `required` is left out and everything else
    # (unknown keys, types, enums) is checked.
    schema = _without_required(yaml.safe_load(Z2JH_SCHEMA.read_text()))
    jsonschema.Draft7Validator(schema).validate(values["jupyterhub"])
    image = values["jupyterhub"]["hub"]["image"]
    assert image["name"] and image["tag"]  # required by z2jh when hub.image is given at all
    bad = copy.deepcopy(values["jupyterhub"])
    bad["hub"]["extraEnvv"] = {}
    with pytest.raises(jsonschema.ValidationError, match="extraEnvv"):
        jsonschema.Draft7Validator(schema).validate(bad)


def test_the_hub_mounts_the_facility_and_points_the_config_at_it(values: dict) -> None:
    hub = values["jupyterhub"]["hub"]
    env = hub["extraEnv"]
    (mount,) = [m for m in hub["extraVolumeMounts"] if m["name"] == "aifacility-facility"]
    (volume,) = [v for v in hub["extraVolumes"] if v["name"] == "aifacility-facility"]
    assert volume["configMap"]["name"] == "aifacility-facility"
    assert env["AIFACILITY_FACILITY"] == f"{mount['mountPath']}/facility.yaml"
    assert env["AIFACILITY_HUB_CONFIG"] == "/usr/local/etc/aifacility/jupyterhub_config.py"
    assert env["AIFACILITY_IAM_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "aifacility-oidc", "key": "client-secret"}
    # Every variable the hub configuration reads that the chart must set is set.
    source = (REPO / "hub" / "jupyterhub_config.py").read_text()
    for name in ("AIFACILITY_FACILITY", "AIFACILITY_HUB_DATA", "AIFACILITY_EXTERNAL_PROXY",
                 "AIFACILITY_CLEANUP_SERVERS", "AIFACILITY_PUBLIC_URL", "AIFACILITY_IAM_CLIENT_SECRET"):
        assert name in source, f"hub/jupyterhub_config.py no longer reads {name}"
        assert name in env


HUB_CONFIG_STANDIN = """
# Sets what hub/jupyterhub_config.py sets for the embedded facility, and reads its environment the same way.
import os
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = 8000
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.db_url = "sqlite:///" + os.environ["AIFACILITY_HUB_DATA"] + "/jupyterhub.sqlite"
c.JupyterHub.cleanup_servers = os.environ.get("AIFACILITY_CLEANUP_SERVERS", "1") == "1"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:8001"
c.ConfigurableHTTPProxy.should_start = os.environ.get("AIFACILITY_EXTERNAL_PROXY", "") != "1"
c.JupyterHub.spawner_class = "aifacility.spawner.FacilitySpawner"
c.FacilitySpawner.namespace = "aifacility"
"""


def test_extra_config_runs_the_hub_config_and_keeps_z2jh_network_settings(
        values: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from traitlets.config import Config

    hub_config = tmp_path / "jupyterhub_config.py"
    hub_config.write_text(HUB_CONFIG_STANDIN)
    for name, value in values["jupyterhub"]["hub"]["extraEnv"].items():
        if isinstance(value, str):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("AIFACILITY_HUB_CONFIG", str(hub_config))
    monkeypatch.setenv("AIFACILITY_HUB_DATA", str(tmp_path))
    # What z2jh's own jupyterhub_config.py has set when it reaches hub.extraConfig.
    c = Config()
    c.ConfigurableHTTPProxy.api_url = "http://proxy-api:8001"
    c.ConfigurableHTTPProxy.should_start = False
    c.JupyterHub.cleanup_servers = False
    c.JupyterHub.db_url = "sqlite:///jupyterhub.sqlite"
    c.JupyterHub.hub_bind_url = "http://:8081"
    c.KubeSpawner.namespace = "jhub"
    for _key, snippet in sorted(values["jupyterhub"]["hub"]["extraConfig"].items()):
        exec(snippet, {"c": c})  # as z2jh does, in a namespace where `c` is the config

    assert c.JupyterHub.spawner_class == "aifacility.spawner.FacilitySpawner"
    assert c.FacilitySpawner.namespace == "aifacility"
    assert c.ConfigurableHTTPProxy.api_url == "http://proxy-api:8001"
    assert c.ConfigurableHTTPProxy.should_start is False
    assert c.JupyterHub.cleanup_servers is False
    assert c.JupyterHub.db_url == "sqlite:///jupyterhub.sqlite"
    assert c.JupyterHub.hub_bind_url == "http://:8081"
    # Traits z2jh leaves unset stay unset, instead of pointing at the embedded facility's loopback addresses.
    for trait in ("ip", "port", "hub_ip"):
        assert trait not in c.JupyterHub


def _run_real_hub_config(values: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The hub configuration the image ships, run the way the chart runs it, with the chart's environment; the
    Config it leaves."""
    from traitlets.config import Config

    facility_file = tmp_path / "facility.yaml"
    facility_file.write_text(yaml.safe_dump(values["facility"]))
    for name, value in values["jupyterhub"]["hub"]["extraEnv"].items():
        if isinstance(value, str):
            monkeypatch.setenv(name, value)
    # Where the chart mounts or generates these, the test has its own.
    monkeypatch.setenv("AIFACILITY_FACILITY", str(facility_file))
    monkeypatch.setenv("AIFACILITY_HUB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("AIFACILITY_HUB_CONFIG", str(REPO / "hub" / "jupyterhub_config.py"))
    monkeypatch.setenv("AIFACILITY_IAM_CLIENT_SECRET", "from-the-secret")
    c = Config()
    c.ConfigurableHTTPProxy.api_url = "http://proxy-api:8001"
    c.ConfigurableHTTPProxy.should_start = False
    c.JupyterHub.cleanup_servers = False
    c.JupyterHub.db_url = "sqlite:///jupyterhub.sqlite"
    c.JupyterHub.hub_connect_url = "http://hub:8081"
    c.KubeSpawner.environment = dict(values["jupyterhub"]["singleuser"]["extraEnv"])  # z2jh: singleuser.extraEnv
    exec(values["jupyterhub"]["hub"]["extraConfig"]["10-aifacility"], {"c": c})
    return c


def test_extra_config_with_the_real_hub_config(values: dict, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    c = _run_real_hub_config(values, tmp_path, monkeypatch)

    env = c.FacilitySpawner.environment
    assert env["DASK_GATEWAY__PROXY_ADDRESS"] == "gateway://traefik-dask-gateway:80"
    # The subchart runs the gateway and z2jh declares its service; the hub grants every user its scope.
    assert not [s for s in c.JupyterHub.get("services", []) if s.get("name") == "dask-gateway"]
    user_role = next(r for r in c.JupyterHub.load_roles if r["name"] == "user")
    assert "access:services!service=dask-gateway" in user_role["scopes"]
    assert env["POD_IP"] == {"valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}  # the facility's own
    assert c.JupyterHub.spawner_class.__name__ == "FacilitySpawner"
    assert c.FacilitySpawner.namespace == values["facility"]["namespace"]
    assert c.JupyterHub.authenticator_class.__name__ == "IAMAuthenticator"
    assert c.IAMAuthenticator.issuer == "https://iam.example.org/"
    assert c.IAMAuthenticator.client_secret == "from-the-secret"
    assert c.IAMAuthenticator.oauth_callback_url == "https://aifacility.example.org/hub/oauth_callback"
    assert (c.ConfigurableHTTPProxy.api_url, c.JupyterHub.cleanup_servers) == ("http://proxy-api:8001", False)
    assert c.JupyterHub.db_url == "sqlite:///jupyterhub.sqlite"
    assert c.JupyterHub.hub_connect_url == "http://hub:8081"  # no POD_NAMESPACE: z2jh's value unchanged


def test_the_hub_s_own_services_are_reached_through_the_hub_service(values: dict, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The proxy is another pod, and notebooks call the services: a service on the hub pod's loopback would be
    unreachable. Each is on the hub's Service, on a port the hub's NetworkPolicy opens to the pods z2jh labels
    for hub access (the proxy's and the notebooks'); the usage service runs when the ledger's Secret exists."""
    hub = values["jupyterhub"]["hub"]
    service_ports = {p["port"]: p for p in hub["service"]["extraPorts"]}
    (rule,) = hub["networkPolicy"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"hub.jupyter.org/network-access-hub": "true"}}}]
    open_ports = {p["port"] for p in rule["ports"]}
    assert hub["extraEnv"]["AIFACILITY_ACCOUNTING_DB"]["valueFrom"]["secretKeyRef"] == {
        "name": values["accounting"]["databaseSecret"], "key": "url", "optional": True}
    monkeypatch.setenv("AIFACILITY_ACCOUNTING_DB", f"sqlite:///{tmp_path / 'ledger.sqlite'}")  # the Secret exists
    c = _run_real_hub_config(values, tmp_path, monkeypatch)
    urls = {s["name"]: urlsplit(s["url"]) for s in c.JupyterHub.services if "url" in s and s["name"] != "dask-gateway"}
    assert {"lifetimes", "jobs", "usage", "admin"} <= set(urls), urls
    for name, url in urls.items():
        assert url.hostname == "hub", (name, url)  # the hub's Service, which serves every interface of the pod
        assert service_ports[url.port]["targetPort"] == url.port and url.port in open_ports, (name, url)


def test_one_culler_the_facility_s_own(values: dict) -> None:
    # z2jh's culler would stop every idle session after an hour, CPU sessions included (docs/user/sessions.md).
    assert values["jupyterhub"]["cull"]["enabled"] is False


def test_extra_config_names_a_missing_hub_config(values: dict, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from traitlets.config import Config

    monkeypatch.setenv("AIFACILITY_HUB_CONFIG", str(tmp_path / "absent.py"))
    with pytest.raises(FileNotFoundError, match=r"absent\.py"):
        exec(values["jupyterhub"]["hub"]["extraConfig"]["10-aifacility"], {"c": Config()})


# --- helm ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chart_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chart without its dependencies (see the module docstring)."""
    dest = tmp_path_factory.mktemp("chart") / "aifacility"

    shutil.copytree(CHART, dest)
    meta = yaml.safe_load((dest / "Chart.yaml").read_text())
    meta.pop("dependencies")
    (dest / "Chart.yaml").write_text(yaml.safe_dump(meta))
    return dest


def _helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)


def _template(helm: str, chart: Path, *extra: str, namespace: str = "aifacility") -> list[dict]:
    proc = _helm(helm, "template", "site", str(chart), "--namespace", namespace, "--kube-version", "1.33.0", *extra)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def test_helm_lint_strict(helm: str, chart_copy: Path) -> None:
    proc = _helm(helm, "lint", "--strict", str(chart_copy), "--kube-version", "1.33.0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


def test_helm_lint_of_the_real_chart_only_misses_the_subcharts(helm: str) -> None:
    proc = _helm(helm, "lint", str(CHART), "--kube-version", "1.33.0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "missing these dependencies: jupyterhub,dask-gateway,interlink" in proc.stdout


def test_the_rendered_configmap_holds_the_facility_file(helm: str, chart_copy: Path, values: dict,
                                                       tmp_path: Path) -> None:
    docs = _template(helm, chart_copy)
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert cm["metadata"]["name"] == values["jupyterhub"]["hub"]["extraVolumes"][0]["configMap"]["name"]
    path = tmp_path / "facility.yaml"
    path.write_text(cm["data"]["facility.yaml"])
    assert load_facility(path) == Facility.model_validate(values["facility"])


def test_the_hub_may_read_nodes_kueue_objects_and_queue_positions_and_patch_only_queue_quotas(
        helm: str, chart_copy: Path) -> None:
    docs = _template(helm, chart_copy)
    kinds = {(d["kind"], d["metadata"].get("namespace")) for d in docs}
    (role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    rules: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                rules.setdefault((g, r), set()).update(rule["verbs"])
    assert {"get", "list", "watch"} <= rules[("", "nodes")]
    for kind in ("resourceflavors", "localqueues", "cohorts"):
        assert rules[("kueue.x-k8s.io", kind)] == {"get", "list", "watch"}
    # The admin service sets a group's quota and holds queued work (merge patches); nothing creates or deletes.
    for kind in ("clusterqueues", "workloads"):
        assert rules[("kueue.x-k8s.io", kind)] == {"get", "list", "watch", "patch"}
    assert rules[("visibility.kueue.x-k8s.io", "localqueues/pendingworkloads")] == {"get"}
    (binding,) = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hub", "namespace": "aifacility"}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    # Notebooks run in the release's own namespace here: z2jh's Role covers them; the only Role of the chart's is
    # for the events' image pre-pullers (DaemonSets), and nothing else of the apps group.
    (events_role,) = [d for d in docs if d["kind"] == "Role"]
    assert events_role["metadata"]["namespace"] == "aifacility"
    assert events_role["rules"] == [{"apiGroups": ["apps"], "resources": ["daemonsets"],
                                     "verbs": ["get", "create", "delete"]}]
    assert ("Role", "aifacility") in kinds
    assert not [d for d in docs if d["kind"] == "Secret"]  # no secret in values: the operator's Secret is used


def test_notebooks_in_another_namespace_get_a_role_there(helm: str, chart_copy: Path) -> None:
    docs = _template(helm, chart_copy, namespace="jhub")
    (role,) = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "site-aifacility-hub"]
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding" and d["metadata"]["name"] == "site-aifacility-hub"]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "aifacility"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hub", "namespace": "jhub"}]
    verbs = {r: set(rule["verbs"]) for rule in role["rules"] for r in rule["resources"]}
    assert {"create", "delete", "watch"} <= verbs["pods"] and "create" in verbs["persistentvolumeclaims"]


def test_the_service_account_follows_z2jh_naming(helm: str, chart_copy: Path) -> None:
    docs = _template(helm, chart_copy, "--set", "jupyterhub.fullnameOverride=jh")
    (binding,) = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    assert binding["subjects"][0]["name"] == "jh-hub"
    docs = _template(helm, chart_copy, "--set", "jupyterhub.hub.serviceAccount.name=custom-sa")
    (binding,) = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    assert binding["subjects"][0]["name"] == "custom-sa"


def test_a_client_secret_in_values_becomes_the_secret(helm: str, chart_copy: Path) -> None:
    docs = _template(helm, chart_copy, "--set", "oidc.clientSecret=s3cret")
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    assert secret["metadata"]["name"] == "aifacility-oidc"
    assert secret["stringData"] == {"client-secret": "s3cret"}


def test_helm_refuses_an_empty_issuer_with_a_message(helm: str, chart_copy: Path) -> None:
    proc = _helm(helm, "template", "site", str(chart_copy), "--kube-version", "1.33.0",
                 "--set", "facility.iam.issuer=")
    assert proc.returncode != 0
    assert "facility.iam.issuer is empty: set it to your INDIGO IAM issuer URL" in proc.stderr


def test_helm_applies_the_values_schema_to_the_facility(helm: str, chart_copy: Path) -> None:
    proc = _helm(helm, "template", "site", str(chart_copy), "--kube-version", "1.33.0",
                 "--set", "facility.profiles[0].gpus=1")
    assert proc.returncode != 0
    assert "gpus" in proc.stderr and "schema" in proc.stderr.lower()


def test_notes_tell_the_operator_what_to_do_next(helm: str, chart_copy: Path) -> None:
    proc = _helm(helm, "install", "site", str(chart_copy), "--dry-run=client", "--namespace", "jhub")
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "create secret generic aifacility-oidc" in notes
    assert "kubectl create namespace aifacility" in notes
    assert "Profiles: 8, images: 2, accelerators: 7" in notes


def test_the_interlink_plugin_values_are_what_the_plugin_accepts(values: dict, tmp_path: Path) -> None:
    from aifacility_interlink.cli import build_parser
    from aifacility_interlink.config import load_config

    plugin = values["interlink"]["plugin"]
    args = build_parser().parse_args(plugin["args"])
    # interLink reaches its plugin (SidecarURL = plugin.socket) on a socket only this pod mounts, never on a port
    assert plugin["socket"] == f"unix://{args.listen}" and args.socket_mode == 0o660
    assert str(args.config) == "/etc/interlink/plugin.yaml"  # where the interLink chart mounts plugin.config
    # the token Secret, for a TCP listener, is mounted read-only where the docs' --token-file points
    [token_volume] = [v for v in values["interlink"]["extraVolumes"] if v["name"] == "plugin-token"]
    assert token_volume["secret"]["optional"] is True and token_volume["secret"]["defaultMode"] == 0o400
    assert {"name": "plugin-token", "mountPath": "/etc/aifacility-interlink", "readOnly": True} in plugin[
        "extraVolumeMounts"]
    config = tmp_path / "plugin.yaml"
    config.write_text(plugin["config"])
    cfg = load_config(config)
    target = {n["name"]: n for n in values["facility"]["nodes"]}[values["interlink"]["nodeName"]]
    assert cfg.backend == target["interlink"]["backend"]
    assert cfg.slurm.partition == target["interlink"]["partition"]


def test_notebooks_reach_dask_gateway_under_the_names_the_subchart_gets(values: dict) -> None:
    name = values["dask-gateway"]["fullnameOverride"]
    env = values["jupyterhub"]["singleuser"]["extraEnv"]
    prefix = values["dask-gateway"]["gateway"]["prefix"]
    assert env["DASK_GATEWAY__ADDRESS"] == f"http://traefik-{name}{prefix}"
    assert env["DASK_GATEWAY__PROXY_ADDRESS"] == f"gateway://traefik-{name}:80"
    assert values["jupyterhub"]["hub"]["services"]["dask-gateway"]["url"] == f"http://traefik-{name}"
    assert prefix == "/services/dask-gateway"  # the hub service's path, so the hub proxies the dashboards
    (rule,) = values["jupyterhub"]["singleuser"]["networkPolicy"]["egress"]
    assert rule["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "dask-gateway"


def test_the_accounting_collector_reads_pods_nodes_and_workloads_only_and_runs_unprivileged(
        helm: str, chart_copy: Path) -> None:
    assert not [d for d in _template(helm, chart_copy) if "accounting" in d["metadata"]["name"]]  # off by default
    docs = _template(helm, chart_copy, "--set", "accounting.enabled=true")
    mine = {d["kind"]: d for d in docs if d["metadata"]["name"].startswith("site-aifacility-accounting")
            and d["kind"] != "ConfigMap"}
    assert set(mine) == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service"}
    assert mine["ClusterRole"]["rules"] == [{"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["list"]},
                                            {"apiGroups": ["kueue.x-k8s.io"], "resources": ["workloads"],
                                             "verbs": ["list"]}]
    pod = mine["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == mine["ServiceAccount"]["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
    (ctn,) = pod["containers"]
    assert ctn["command"][:3] == ["aifacility", "accounting", "collect"]
    assert ctn["command"][ctn["command"].index("--namespace") + 1] == "aifacility"
    assert ctn["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                      "capabilities": {"drop": ["ALL"]}}
    (env,) = ctn["env"]
    assert env == {"name": "AIFACILITY_ACCOUNTING_DB",
                   "valueFrom": {"secretKeyRef": {"name": "aifacility-accounting", "key": "url"}}}
    # the dashboard: valid JSON, for Grafana's sidecar, every panel on a metric the collector serves
    (dash_cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    assert dash_cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(dash_cm["data"]["aifacility-usage.json"])
    from aifacility.accounting.metrics import UsageMetrics

    served = {m.name for m in UsageMetrics().registry.collect()}
    for panel in dashboard["panels"]:
        names = set(re.findall(r"aifacility_[a-z_]+", panel["targets"][0]["expr"]))
        assert names and names <= served, (panel["title"], names, served)
    bad = _helm(helm, "template", "site", str(chart_copy), "--set", "accounting.intervalSeconds=0")
    assert bad.returncode != 0 and "intervalSeconds" in bad.stderr


def test_the_facility_s_own_pods_ask_for_what_they_use(values: dict) -> None:
    """Without requests the hub, the proxy and the gateway are the first evicted on a busy node."""
    z2jh, gateway = values["jupyterhub"], values["dask-gateway"]
    for where, res in [("hub", z2jh["hub"]["resources"]), ("proxy", z2jh["proxy"]["chp"]["resources"]),
                       ("gateway", gateway["gateway"]["resources"]),
                       ("controller", gateway["controller"]["resources"]),
                       ("traefik", gateway["traefik"]["resources"])]:
        assert res["requests"]["cpu"] and res["requests"]["memory"], where
        assert parse_quantity(res["limits"]["memory"]) >= parse_quantity(res["requests"]["memory"]), where


def test_the_accounting_collector_reads_the_dcgm_exporters_it_is_given(helm: str, chart_copy: Path) -> None:
    docs = _template(helm, chart_copy, "--set", "accounting.enabled=true", "--set-json",
                     'accounting.dcgmExporterUrls=["http://10.0.0.7:9400/metrics","http://10.0.0.8:9400/metrics"]')
    (deploy,) = [d for d in docs if d["kind"] == "Deployment" and "accounting" in d["metadata"]["name"]]
    command = deploy["spec"]["template"]["spec"]["containers"][0]["command"]
    assert [command[i + 1] for i, a in enumerate(command) if a == "--dcgm-url"] == [
        "http://10.0.0.7:9400/metrics", "http://10.0.0.8:9400/metrics"]
    proc = _helm(helm, "template", "site", str(chart_copy), "--set", "accounting.enabled=true", "--set-json",
                 'accounting.dcgmExporterUrls=["not a url"]')
    assert proc.returncode != 0 and "dcgmExporterUrls" in proc.stderr


def test_every_image_the_chart_names_is_pinned(values: dict) -> None:
    """An image at :latest (or with no tag) changes under a running site at the next pull."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "image" and isinstance(value, str):
                    found.append(value)
                elif key == "image" and isinstance(value, dict) and "name" in value:
                    found.append(f"{value['name']}:{value.get('tag', '')}")
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in values.items() if k != "facility"})  # the facility's images are the notebooks'
    assert len(found) >= 6, found
    for image in found:
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag and tag not in ("", "latest"), image
    assert values["interlink"]["virtualNode"]["image"].endswith(":0.6.1")  # the chart version's own


# --- item 8: the facility's state and notebooks in another namespace ----------------------------------------------

def test_the_facility_s_state_is_on_a_claim_of_its_own_whatever_the_hub_database(
        values: dict, helm: str, chart_copy: Path) -> None:
    """With `hub.db.type: postgres` z2jh mounts no volume: the quota reservations, lifetimes and policies in the
    hub's data directory would sit in the container layer and be lost at every restart."""
    hub = values["jupyterhub"]["hub"]
    data = hub["extraEnv"]["AIFACILITY_HUB_DATA"]
    (mount,) = [m for m in hub["extraVolumeMounts"] if m["mountPath"] == data]
    (volume,) = [v for v in hub["extraVolumes"] if v["name"] == mount["name"]]
    for db in ("sqlite-pvc", "postgres"):
        docs = _template(helm, chart_copy, "--set", f"jupyterhub.hub.db.type={db}")
        (claim,) = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
        assert claim["metadata"]["name"] == volume["persistentVolumeClaim"]["claimName"]
        assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert "storageClassName" not in claim["spec"]  # the cluster's default class
    docs = _template(helm, chart_copy, "--set", "hubState.storageClassName=cinder-ssd")
    (claim,) = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    assert claim["spec"]["storageClassName"] == "cinder-ssd"


def test_notebooks_in_the_release_namespace_need_no_extra_network_policy(helm: str, chart_copy: Path) -> None:
    assert not [d for d in _template(helm, chart_copy) if d["kind"] == "NetworkPolicy"]


def test_notebooks_in_another_namespace_reach_the_hub_and_are_guarded_there(helm: str, chart_copy: Path) -> None:
    docs = _template(helm, chart_copy, namespace="jhub")
    policies = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    assert set(policies) == {"jhub", "aifacility"}
    hub = policies["jhub"]["spec"]
    assert hub["podSelector"]["matchLabels"] == {"component": "hub", "release": "site"}
    (rule,) = hub["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "aifacility"}},
                             "podSelector": {"matchLabels": {"hub.jupyter.org/network-access-hub": "true"}}}]
    assert {p["port"] for p in rule["ports"]} == {8081, 10101, 10102, 10103, 10104}
    notebooks = policies["aifacility"]["spec"]
    assert notebooks["podSelector"]["matchLabels"] == {"component": "singleuser-server"}
    assert notebooks["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = notebooks["ingress"]
    assert ingress["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "jhub"}
    internet = next(r for r in notebooks["egress"] if "ipBlock" in r["to"][0])
    assert "10.0.0.0/8" in internet["to"][0]["ipBlock"]["except"]
    assert "169.254.169.254/32" in internet["to"][0]["ipBlock"]["except"]


def test_notebooks_in_another_namespace_get_addresses_that_name_the_hub_s_namespace(
        values: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Service's short name resolves in the pod's own namespace: `hub` from a notebook in `aifacility` would not
    find the hub of a release in `jhub`."""
    monkeypatch.setenv("POD_NAMESPACE", "jhub")  # z2jh sets it in the hub pod
    monkeypatch.setenv("AIFACILITY_ACCOUNTING_DB", f"sqlite:///{tmp_path / 'ledger.sqlite'}")  # usage runs
    c = _run_real_hub_config(values, tmp_path, monkeypatch)
    urls = {s["name"]: urlsplit(s["url"]) for s in c.JupyterHub.services if "url" in s and s["name"] != "dask-gateway"}
    assert {url.hostname for url in urls.values()} == {"hub.jhub.svc"}
    assert c.JupyterHub.hub_connect_url == "http://hub.jhub.svc:8081"  # what notebooks call the hub's API at
    env = c.FacilitySpawner.environment
    assert env["DASK_GATEWAY__ADDRESS"] == "http://traefik-dask-gateway.jhub.svc/services/dask-gateway"
    assert env["DASK_GATEWAY__PROXY_ADDRESS"] == "gateway://traefik-dask-gateway.jhub.svc:80"
    assert env["AIFACILITY_USAGE_API"].startswith("http://hub.jhub.svc:10103/")


def test_the_chart_lock_is_helm_s_own_for_the_pinned_dependencies(helm: str, tmp_path: Path) -> None:
    """Chart.lock as `helm dependency update` writes it (tests/deploy/chart_lock.py --write after a change of
    Chart.yaml's dependencies), and `helm dependency build` accepts it: it refuses a lock out of sync."""
    from chart_lock import render_lock

    lock = yaml.safe_load((CHART / "Chart.lock").read_text())
    assert lock == yaml.safe_load(render_lock(helm))
    deps = yaml.safe_load((CHART / "Chart.yaml").read_text())["dependencies"]
    assert [(d["name"], d["version"]) for d in lock["dependencies"]] == [(d["name"], d["version"]) for d in deps]
    chart = tmp_path / "aifacility"
    shutil.copytree(CHART, chart)
    built = _helm(helm, "dependency", "build", "--skip-refresh", str(chart))
    assert "out of sync" not in built.stderr  # it goes on to download the charts, which it cannot here
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    meta["dependencies"][0]["version"] = "4.3.0"
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta))
    stale = _helm(helm, "dependency", "build", "--skip-refresh", str(chart))
    assert stale.returncode != 0 and "out of sync" in stale.stderr


def test_two_releases_share_no_cluster_scoped_object_of_the_chart_s_own(helm: str, chart_copy: Path) -> None:
    """A second facility (another release, another namespace) on the same cluster: the chart's own cluster-wide
    objects are named after the release, and Kueue is no longer in the release at all."""
    def cluster_scoped(release: str, namespace: str) -> set[tuple[str, str]]:
        proc = _helm(helm, "template", release, str(chart_copy), "--namespace", namespace, "--kube-version",
                     "1.33.0", "--set", "accounting.enabled=true", "--set", f"facility.namespace={namespace}-notebooks")
        assert proc.returncode == 0, proc.stderr
        docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
        assert not [d for d in docs if d["kind"] == "CustomResourceDefinition"]
        return {(d["kind"], d["metadata"]["name"]) for d in docs if "namespace" not in d["metadata"]}

    first, second = cluster_scoped("physics-af", "physics"), cluster_scoped("school-af", "school")
    assert first and second and not first & second
