"""Container environment ($(VAR) expansion, valueFrom, defaults) and the bubblewrap command, run for real."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aifacility.embedded.nodeagent.env import ConfigError, container_env, expand, expand_command
from aifacility.embedded.nodeagent.sandbox import Mount, bwrap_command, capabilities


def test_expand_like_kubernetes() -> None:
    env = {"A": "1", "POD_IP": "127.16.0.9"}
    assert expand("--ServerApp.ip=$(POD_IP)", env) == "--ServerApp.ip=127.16.0.9"
    assert expand("$$(A) $(A)$(A)", env) == "$(A) 11"
    assert expand("$(MISSING) $(A", env) == "$(MISSING) $(A"
    assert expand("$A $", env) == "$A $"


POD: dict[str, Any] = {
    "metadata": {"name": "nb", "namespace": "ns", "uid": "u-1", "labels": {"app": "x"}},
    "spec": {"nodeName": "cpu-01", "containers": [{"name": "c", "resources": {"limits": {"memory": "1Gi"}}}]},
    "status": {"podIP": "127.16.0.9"},
}
OBJECTS = {
    ("Secret", "s"): {"data": {"token": base64.b64encode(b"t0k").decode()}},
    ("ConfigMap", "cm"): {"data": {"mode": "dev", "level": "3"}},
}


def lookup(kind: str, name: str) -> dict[str, Any] | None:
    return OBJECTS.get((kind, name))


def test_env_sources_and_order() -> None:
    container = {
        "name": "c",
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "mode"}}},
            {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "URL", "value": "http://$(POD_IP):8888/$(NAME)"},
        ],
        "args": ["--ip=$(POD_IP)", "$(CM_level)"],
        "command": ["jupyterhub-singleuser"],
    }
    env = container_env(POD, container, lookup, {"memory": "64Gi"})
    assert env["POD_IP"] == "127.16.0.9" and env["NAME"] == "nb" and env["APP"] == "x"
    assert env["TOKEN"] == "t0k" and env["MODE"] == "dev" and env["CM_level"] == "3"
    assert env["MEM_MI"] == "1024"
    assert env["URL"] == "http://127.16.0.9:8888/nb"
    assert env["HOME"] == "/root" and env["HOSTNAME"] == "nb"
    assert env["PATH"].startswith(f"{sys.prefix}/bin:")
    assert expand_command(container, env) == ["jupyterhub-singleuser", "--ip=127.16.0.9", "3"]


def test_missing_secret_is_a_config_error_unless_optional() -> None:
    ref: dict[str, Any] = {"name": "T", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}
    with pytest.raises(ConfigError, match='secret "nope" not found'):
        container_env(POD, {"name": "c", "env": [ref]}, lookup, {})
    ref["valueFrom"]["secretKeyRef"]["optional"] = True
    assert "T" not in container_env(POD, {"name": "c", "env": [ref]}, lookup, {})
    missing_key = {"name": "T", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "nokey"}}}
    with pytest.raises(ConfigError, match="couldn't find key nokey in ConfigMap ns/cm"):
        container_env(POD, {"name": "c", "env": [missing_key]}, lookup, {})


def test_pod_path_keeps_the_host_path_after_it() -> None:
    env = container_env(POD, {"name": "c", "env": [{"name": "PATH", "value": "/opt/conda/bin"}]}, lookup, {})
    assert env["PATH"].startswith("/opt/conda/bin:") and len(env["PATH"]) > len("/opt/conda/bin:")


def test_bwrap_command_layout(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    argv = bwrap_command(["true"], pod_tmp=tmp_path, mounts=[Mount(data, "/data", read_only=True)],
                         working_dir="/data", hostname="nb")
    joined = " ".join(argv)
    assert argv[:3] == ["/usr/bin/bwrap", "--tmpfs", "/"]
    assert "--ro-bind /usr /usr" in joined
    # The host's credentials and checkouts are not part of the "image"; the Python environment is bound alone.
    assert "--ro-bind /root /root" not in joined and "--ro-bind /work /work" not in joined
    assert f"--ro-bind {sys.prefix} {sys.prefix}" in joined
    # A root container keeps only the default capabilities, never all of them.
    assert "--cap-drop ALL" in joined and "--cap-add CAP_CHOWN" in joined and "CAP_SYS_ADMIN" not in joined
    assert f"--bind {tmp_path} /tmp" in joined
    for flag in ("--die-with-parent", "--unshare-pid", "--unshare-ipc", "--dev /dev", "--proc /proc"):
        assert flag in joined
    assert "--unshare-net" not in joined  # the pod listens on its loopback IP in the host's network
    assert f"--ro-bind {data} /data" in joined
    assert argv[-4:] == ["--chdir", "/data", "--", "true"]


def test_a_root_container_has_the_capabilities_its_security_context_leaves() -> None:
    assert "NET_RAW" in capabilities(None) and "SYS_ADMIN" not in capabilities(None)
    assert capabilities({"capabilities": {"drop": ["ALL"]}}) == []
    assert capabilities({"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}) == ["NET_BIND_SERVICE"]
    assert "NET_RAW" not in capabilities({"capabilities": {"drop": ["CAP_NET_RAW"]}})


def test_sandbox_mounts_volumes_at_their_paths(tmp_path: Path) -> None:
    cfg, data, pod_tmp = tmp_path / "cfg", tmp_path / "data", tmp_path / "tmp"
    for d in (cfg, data, pod_tmp):
        d.mkdir()
    (cfg / "key").write_text("value-1")
    mounts = [Mount(cfg, "/etc/cfg", read_only=True), Mount(data, "/home/jovyan/work")]
    script = ("cat /etc/cfg/key; echo; echo written > /home/jovyan/work/out; "
              "touch /etc/cfg/new 2>/dev/null || echo read-only; hostname; pwd; "
              "cat /etc/hostname >/dev/null && echo etc")
    argv = bwrap_command(["sh", "-c", script], pod_tmp=pod_tmp, mounts=mounts, working_dir="/home/jovyan",
                         hostname="nb-1")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["value-1", "read-only", "nb-1", "/home/jovyan", "etc"]
    assert (data / "out").read_text() == "written\n"


def test_a_volume_under_a_host_symlink_is_mounted(tmp_path: Path) -> None:
    """The service-account volume every pod gets is at /var/run/secrets/..., and /var/run links to /run."""
    token, pod_tmp = tmp_path / "token", tmp_path / "tmp"
    for d in (token, pod_tmp):
        d.mkdir()
    (token / "namespace").write_text("aifacility")
    target = "/var/run/secrets/kubernetes.io/serviceaccount"
    argv = bwrap_command(["sh", "-c", f"cat {target}/namespace; echo; echo x > /run/own; cat /var/run/own"],
                         pod_tmp=pod_tmp, mounts=[Mount(token, target, read_only=True)])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["aifacility", "x"]
