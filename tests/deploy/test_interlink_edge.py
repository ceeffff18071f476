"""The interlink_edge role (interLink + the plugin on an HPC site's edge node) and the chart values beside it.

Run for real on localhost: the preflight task files (this machine is no submit host of a site: they must refuse
it with a message that says what is missing; with the session's real SLURM they must pass) and the configuration
task file, whose rendered files are read back with the plugin's own loader, interLink's config keys and a TOML
parser. Not run here: the downloads, systemd, oauth2-proxy against a real IAM, a real HPC site.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from deploy_support import ANSIBLE, CHART, REPO

from aifacility_interlink.cli import build_parser
from aifacility_interlink.config import load_config

ROLE = ANSIBLE / "roles" / "interlink_edge"
EXAMPLE = ANSIBLE / "inventories" / "example"
VENV_BIN = Path(sys.executable).parent
# The yaml tags of interLink 0.6.1's API server Config (pkg/interlink/config.go): the file it reads.
INTERLINK_CONFIG_KEYS = {"InterlinkAddress", "InterlinkPort", "SidecarURL", "SidecarPort", "JobScriptBuildConfig",
                         "JobScriptTemplate", "VerboseLogging", "ErrorsOnlyLogging", "DataRootFolder", "TLS"}
# Keys of the interLink chart 0.6.1's values.yaml that charts/aifacility/values.yaml does not already set, used by
# the edge example (the virtual kubelet's TLS check and the refresh-token sidecar).
INTERLINK_CHART_KEYS = {"virtualNode.HTTP", "virtualNode.HTTP.insecure", "virtualNode.HTTP.CACert",
                        "OAUTH", "OAUTH.enabled", "OAUTH.image", "OAUTH.TokenURL", "OAUTH.ClientID",
                        "OAUTH.ClientSecret", "OAUTH.RefreshToken", "OAUTH.GrantType", "OAUTH.Audience"}
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="runuser and chown need root, as on the edge node")


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _play(collections_path: str, tmp_path: Path, tasks_from: str, given: dict[str, Any]) -> str:
    """One of the role's task files, for real, on localhost, with `given` as typed extra vars; its output."""
    play = tmp_path / "play.yml"
    play.write_text(yaml.safe_dump([{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "tasks": [{"name": "Run", "ansible.builtin.include_role": {"name": "aifacility.platform.interlink_edge",
                                                                    "tasks_from": tasks_from}}]}]))
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({**given, "ansible_python_interpreter": sys.executable}))
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": collections_path, "ANSIBLE_LOCALHOST_WARNING": "false",
           "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", str(play), "-e", f"@{extra}"],
                          capture_output=True, text=True, timeout=300, env=env)
    return ("ok\n" if proc.returncode == 0 else "FAILED\n") + proc.stdout + proc.stderr


# --- preflight: a host that is no submit host, a data root the compute nodes cannot use ---------------------------

def test_preflight_refuses_a_missing_slurm_conf(collections_path: str, tmp_path: Path) -> None:
    out = _play(collections_path, tmp_path, "preflight_slurm.yml",
                {"interlink_edge_slurm_conf": str(tmp_path / "nowhere" / "slurm.conf")})
    assert out.startswith("FAILED"), out
    assert f"interlink_edge_slurm_conf is {tmp_path}/nowhere/slurm.conf, which does not exist" in out, out


def test_preflight_refuses_a_host_that_is_not_a_submit_host(collections_path: str, tmp_path: Path) -> None:
    # A slurm.conf naming a controller that does not run: whatever SLURM client this machine has (or none), the
    # role stops at the client or at the controller, saying which.
    port = 1  # nothing listens there
    conf = tmp_path / "slurm.conf"
    conf.write_text(f"ClusterName=nowhere\nSlurmctldHost=localhost\nSlurmctldPort={port}\nAuthType=auth/munge\n"
                    "NodeName=n1 State=UNKNOWN\nPartitionName=debug Nodes=n1\n")
    out = _play(collections_path, tmp_path, "preflight_slurm.yml",
                {"interlink_edge_slurm_conf": str(conf), "interlink_edge_munge": False})
    assert out.startswith("FAILED"), out
    assert ("is not a SLURM submit host: `sinfo --version` failed" in out
            or "cannot reach the site's slurmctld" in out), out
    assert "Refuse" in out  # a refusal with its message, not a crash of a task


@pytest.mark.slurm
@needs_root
def test_preflight_passes_on_a_real_submit_host(collections_path: str, tmp_path: Path, slurm: Any) -> None:
    """The session's real SLURM (slurmctld, slurmd, munged with its own socket) is a working submit host."""
    given = {"interlink_edge_slurm_conf": str(slurm.conf), "interlink_edge_munge_socket": str(slurm.munge_socket),
             "interlink_edge_plugin_config": {"slurm": {"partition": slurm.partition}}}
    out = _play(collections_path, tmp_path, "preflight_slurm.yml", given)
    assert out.startswith("ok"), out
    wrong = _play(collections_path, tmp_path, "preflight_slurm.yml",
                  {**given, "interlink_edge_plugin_config": {"slurm": {"partition": "no-such-partition"}}})
    assert wrong.startswith("FAILED") and "is not one of the site's: " + slurm.partition in wrong, wrong
    munge = _play(collections_path, tmp_path, "preflight_slurm.yml",
                  {**given, "interlink_edge_munge_socket": str(tmp_path / "no-munged.socket")})
    assert munge.startswith("FAILED") and "`munge -n | unmunge` failed" in munge, munge


@needs_root
def test_preflight_refuses_a_data_root_the_jobs_cannot_use(collections_path: str, tmp_path: Path) -> None:
    missing = _play(collections_path, tmp_path, "preflight_data_root.yml",
                    {"interlink_edge_user": "root", "interlink_edge_data_root": str(tmp_path / "shared")})
    assert missing.startswith("FAILED") and f"{tmp_path}/shared is not a directory" in missing, missing
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o700)
    nobody = _play(collections_path, tmp_path, "preflight_data_root.yml",
                   {"interlink_edge_user": "nobody", "interlink_edge_data_root": str(shared)})
    assert nobody.startswith("FAILED") and f"nobody cannot write {shared}" in nobody, nobody
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(shared)], capture_output=True, text=True).stdout.strip()
    local = _play(collections_path, tmp_path, "preflight_data_root.yml",
                  {"interlink_edge_user": "root", "interlink_edge_data_root": str(shared)})
    if fs in _yaml(ROLE / "defaults" / "main.yml")["interlink_edge_local_fs_types"]:
        assert local.startswith("FAILED") and f"is on a {fs} filesystem, local to" in local, local
    else:  # a machine whose temporary directory is on a network filesystem
        assert local.startswith("ok"), local
    accepted = _play(collections_path, tmp_path, "preflight_data_root.yml",
                     {"interlink_edge_user": "root", "interlink_edge_data_root": str(shared),
                      "interlink_edge_data_root_local_ok": True})
    assert accepted.startswith("ok"), accepted


# --- the files the role writes -----------------------------------------------------------------------------------

ROLE_VARS = {
    "interlink_edge_user": "root", "interlink_edge_api_user": "root",
    "interlink_edge_oidc_issuer": "https://iam.example.org/", "interlink_edge_oidc_client_id": "interlink-edge",
    "interlink_edge_oidc_client_secret": "s3cret", "interlink_edge_oidc_allowed_groups": ["aifacility/interlink"],
    "interlink_edge_tls_cert": "/etc/edge.crt", "interlink_edge_tls_key": "/etc/edge.key",
    "interlink_edge_start_services": False,
}


@pytest.fixture(scope="module")
def rendered(collections_path: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if os.geteuid() != 0:
        pytest.skip("the configuration tasks chown to the accounts, as on the edge node")
    tmp = tmp_path_factory.mktemp("edge")
    plugin_config = _yaml(EXAMPLE / "group_vars" / "interlink_edge.yml")["interlink_edge_plugin_config"]
    given = {**ROLE_VARS, "interlink_edge_config_dir": str(tmp / "etc"), "interlink_edge_run_dir": str(tmp / "run"),
             "interlink_edge_data_root": str(tmp / "shared"), "interlink_edge_plugin_config": plugin_config}
    out = _play(collections_path, tmp, "config.yml", given)
    assert out.startswith("ok"), out
    again = _play(collections_path, tmp, "config.yml", given)
    assert "changed=0" in again, again  # idempotent: a second run restarts nothing
    return {"tmp": tmp, "given": given}


def test_the_plugin_config_is_one_the_plugin_accepts(rendered: dict[str, Any]) -> None:
    etc = rendered["tmp"] / "etc"
    cfg = load_config(etc / "plugin.yaml")
    assert cfg.data_root == rendered["tmp"] / "shared"
    assert cfg.backend == "slurm" and cfg.slurm.partition == "boost_usr_prod"
    assert "--account" in cfg.slurm.locked_flags
    assert cfg.bearer_token() is None  # reached on its socket; no secret in a world-readable file


def test_interlink_calls_the_plugin_on_its_socket_and_listens_on_its_own(rendered: dict[str, Any]) -> None:
    conf = _yaml(rendered["tmp"] / "etc" / "InterLinkConfig.yaml")
    assert set(conf) <= INTERLINK_CONFIG_KEYS, set(conf) - INTERLINK_CONFIG_KEYS
    run = rendered["tmp"] / "run"
    assert conf["SidecarURL"] == f"unix://{run}/plugin.sock" and conf["InterlinkAddress"] == f"unix://{run}/interlink.sock"
    # The sockets' directory: setgid (the plugin's socket takes interLink's group) and sticky.
    assert oct(run.stat().st_mode & 0o7777) == "0o3770"


def test_oauth2_proxy_admits_only_iam_bearer_tokens_over_tls(rendered: dict[str, Any]) -> None:
    path = rendered["tmp"] / "etc" / "oauth2-proxy.cfg"
    assert path.stat().st_mode & 0o777 == 0o640  # it holds the client and cookie secrets
    cfg = tomllib.loads(path.read_text())
    conf = _yaml(rendered["tmp"] / "etc" / "InterLinkConfig.yaml")
    assert cfg["upstreams"] == [conf["InterlinkAddress"]]
    assert cfg["https_address"] == "0.0.0.0:30443"
    assert cfg["http_address"].startswith("127.0.0.1:")
    assert (cfg["tls_cert_file"], cfg["tls_key_file"]) == ("/etc/edge.crt", "/etc/edge.key")
    assert cfg["provider"] == "oidc" and cfg["oidc_issuer_url"] == "https://iam.example.org/"
    assert cfg["skip_jwt_bearer_tokens"] is True and cfg["api_routes"] == ["^/"]
    assert cfg["oidc_extra_audiences"] == ["interlink"] and cfg["allowed_groups"] == ["aifacility/interlink"]
    assert len(cfg["cookie_secret"]) == 32  # oauth2-proxy takes 16, 24 or 32 bytes


def _unit(name: str, **given: Any) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROLE / "templates"), undefined=jinja2.StrictUndefined)
    defaults = {k: v for k, v in _yaml(ROLE / "defaults" / "main.yml").items()}
    context: dict[str, Any] = {**defaults, **ROLE_VARS, "ansible_managed": "managed", **given}
    derived = _yaml(ROLE / "vars" / "main.yml")
    for key in ("interlink_edge_venv", "interlink_edge_bin", "interlink_edge_plugin_socket",
                "interlink_edge_api_socket"):
        context[key] = env.from_string(derived[key]).render(context)
    return env.get_template(f"{name}.j2").render(context)


def _exec_start(unit: str) -> list[str]:
    (line,) = [ln for ln in unit.splitlines() if ln.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def test_the_units_run_each_part_as_its_account_on_its_socket() -> None:
    plugin = _unit("aifacility-interlink-plugin.service", interlink_edge_user="svc-aifacility",
                   interlink_edge_slurm_conf="/etc/slurm/slurm.conf")
    assert "User=svc-aifacility" in plugin and "Environment=SLURM_CONF=/etc/slurm/slurm.conf" in plugin
    argv = _exec_start(plugin)
    assert argv[0] == "/opt/aifacility-interlink/venv/bin/aifacility-interlink"
    args = build_parser().parse_args(argv[1:])
    assert args.listen == "/run/aifacility-interlink/plugin.sock" and args.socket_mode == 0o660
    assert str(args.config) == "/etc/aifacility-interlink/plugin.yaml"
    api = _unit("interlink-api.service", interlink_edge_api_user="interlink")
    assert "User=interlink" in api and "UMask=0077" in api
    assert "Environment=INTERLINKCONFIGPATH=/etc/aifacility-interlink/InterLinkConfig.yaml" in api
    proxy = _unit("interlink-oauth2-proxy.service", interlink_edge_api_user="interlink")
    assert "User=interlink" in proxy
    assert _exec_start(proxy) == ["/opt/aifacility-interlink/bin/oauth2-proxy",
                                  "--config=/etc/aifacility-interlink/oauth2-proxy.cfg"]
    assert "CAP_NET_BIND_SERVICE" not in proxy and "CAP_NET_BIND_SERVICE" in _unit(
        "interlink-oauth2-proxy.service", interlink_edge_port=443)


def test_config_changes_restart_their_service() -> None:
    handlers = {h["name"] for h in _yaml(ROLE / "handlers" / "main.yml")}
    for f in ("install.yml", "config.yml"):
        for task in _yaml(ROLE / "tasks" / f):
            notify = task.get("notify", [])
            for name in [notify] if isinstance(notify, str) else notify:
                assert name in handlers, f"{f}: {task['name']} notifies {name}"
    config = {t["name"]: t for t in _yaml(ROLE / "tasks" / "config.yml")}
    assert config["Write interLink's configuration"]["notify"] == "Restart interLink"
    assert config["Write the plugin's configuration"]["notify"] == "Restart the plugin"
    assert config["Write oauth2-proxy's configuration"]["notify"] == "Restart oauth2-proxy"


def test_downloads_are_pinned_and_checked() -> None:
    defaults = _yaml(ROLE / "defaults" / "main.yml")
    assert defaults["interlink_edge_interlink_version"] == "0.6.1"
    assert "/releases/download/{{ interlink_edge_interlink_version }}/interlink_Linux_x86_64" in defaults[
        "interlink_edge_interlink_url"]
    assert re.fullmatch(r"v\d+\.\d+\.\d+", defaults["interlink_edge_oauth2_proxy_version"])
    for task in _yaml(ROLE / "tasks" / "install.yml"):
        if "ansible.builtin.get_url" in task:
            assert task["ansible.builtin.get_url"]["checksum"].startswith("sha256:{{ interlink_edge_")
    # The checksums have no default: a site pins them, and the preflight refuses anything but 64 hex digits.
    spec = _yaml(ROLE / "meta" / "main.yml")["argument_specs"]["main"]["options"]
    for name in ("interlink_edge_interlink_sha256", "interlink_edge_oauth2_proxy_sha256"):
        assert name not in defaults and spec[name]["required"]


# --- the example inventory and chart values ----------------------------------------------------------------------

def test_the_example_group_vars_satisfy_the_argument_spec() -> None:
    spec = _yaml(ROLE / "meta" / "main.yml")["argument_specs"]["main"]["options"]
    example = _yaml(EXAMPLE / "group_vars" / "interlink_edge.yml")
    given = {k: ("0" * 64 if "{{" in v else v) if isinstance(v, str) else v for k, v in example.items()}
    result = ArgumentSpecValidator(spec).validate(given)
    assert not result.error_messages, result.error_messages
    assert {k for k, o in spec.items() if o.get("required")} <= set(example)
    load_config(None, **{**example["interlink_edge_plugin_config"], "data_root": example["interlink_edge_data_root"]})
    assert "interlink_edge" in _yaml(EXAMPLE / "hosts.yml")["all"]["children"]
    plays = {p["hosts"]: p for p in _yaml(ANSIBLE / "playbooks" / "site.yml")}
    edge = plays["interlink_edge"]
    assert edge["roles"] == ["aifacility.platform.interlink_edge"] and edge["become"]


def _paths(tree: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        out.add(path)
        if isinstance(value, dict):
            out |= _paths(value, path + ".")
    return out


def test_the_example_values_put_only_the_virtual_kubelet_in_the_cluster() -> None:
    values = _yaml(EXAMPLE / "values-interlink-edge.yml")["interlink"]
    chart = _yaml(CHART / "values.yaml")["interlink"]
    unknown = _paths(values) - _paths(chart) - INTERLINK_CHART_KEYS
    assert not unknown, f"keys neither the chart nor interLink's chart 0.6.1 has: {unknown}"
    assert values["enabled"] is True
    assert values["interlink"]["enabled"] is False and values["plugin"]["enabled"] is False
    edge = _yaml(EXAMPLE / "group_vars" / "interlink_edge.yml")
    assert values["interlink"]["address"].startswith("https://")
    assert values["interlink"]["port"] == edge["interlink_edge_port"]
    assert values["virtualNode"]["HTTP"]["insecure"] is False
    assert values["OAUTH"]["enabled"] is True and values["OAUTH"]["Audience"] == edge["interlink_edge_oidc_audience"]
    assert values["OAUTH"]["GrantType"] in ("authorization_code", "client_credentials")  # refresh.py's two flows
    assert values["nodeName"] == chart["nodeName"]
    assert values["virtualNode"]["image"] == chart["virtualNode"]["image"]
    assert values["OAUTH"]["image"].endswith(":" + chart["virtualNode"]["image"].rsplit(":", 1)[1])


def test_the_operator_guide_walks_through_the_edge_node() -> None:
    doc = (REPO / "docs" / "operator" / "interlink.md").read_text()
    start = doc.index("## Deploying: the edge node")
    section = doc[start:doc.index("\n## ", start + 1)]
    spec = _yaml(ROLE / "meta" / "main.yml")["argument_specs"]["main"]["options"]
    for name, option in spec.items():
        if option.get("required"):
            assert name in section, f"{name} is required but not in the guide"
    for words in ("kubectl get node vk-hpc-leonardo", "values-interlink-edge.yml", "30443", "munge -n | unmunge",
                  "What the tests here verify", "not verified"):
        assert words in section, words
