"""From inside bob's notebook (code in his kernel, sent through the Jupyter REST API as a script of his would),
the cluster gives him nothing: he is not root and has no capabilities, no credentials are in his pod, and the
Kubernetes API refuses to show him alice's pod, to create a pod, to mount alice's home claim or a host path, or to
read secrets, with or without the tokens his session holds. His pod has a network of its own: he sees only his own
interfaces and sockets, alice's server refuses him without her token, and the interLink plugin and etcd are out of
his reach."""

from __future__ import annotations

import json
import subprocess

import pytest

from aifacility.embedded.controlplane import build
from support.facility import RunningFacility
from support.kernel import run_in_kernel
from support.oidc_login import oidc_login
from support.spawning import spawn_and_wait, stop_and_wait

pytestmark = pytest.mark.slow

CPU = {"profile": "cpu-small", "image": "ml"}

PROBE = r'''
import json, os, socket, ssl, urllib.error, urllib.request
api = f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}"
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE  # an attacker does not care whom they talk to

def call(method, path, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(api + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError as e:
        return type(e).__name__

def reach(host, port):
    try:
        socket.create_connection((host, port), timeout=5).close()
        return "connected"
    except OSError as e:
        return type(e).__name__

def http(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError as e:
        return type(e).__name__

def pod(name, volume):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["cat", "/x/secret.txt"],
                                     "volumeMounts": [{"name": "x", "mountPath": "/x"}]}],
                     "volumes": [dict(name="x", **volume)]}}

pods = "/api/v1/namespaces/aifacility/pods"
hub_token = os.environ.get("JUPYTERHUB_API_TOKEN")
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
out = {
    "uid": os.getuid(),
    "gid": os.getgid(),
    "effective_capabilities": status["CapEff"].strip(),
    "no_new_privs": status["NoNewPrivs"].strip(),
    # the host's credentials and the checkout (only the Python environment is bound from there)
    "host_files": [p for p in ("/root/.kube", "/root/.ssh", "/root/.bash_history", "/work/main/.git",
                               "/work/main/README.md", "/work/shared") if os.path.exists(p)],
    "service_account_token": os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token"),
    "kubeconfig": os.path.exists(os.path.expanduser("~/.kube/config")) or bool(os.environ.get("KUBECONFIG")),
    "read_alice_pod": call("GET", pods + "/jupyter-alice"),
    "list_pods": call("GET", pods),
    "create_pod": call("POST", pods, pod("bob-probe", {"emptyDir": {}})),
    "mount_alice_home": call("POST", pods, pod("bob-steals", {"persistentVolumeClaim": {"claimName": "home-alice"}})),
    "mount_host_path": call("POST", pods, pod("bob-host", {"hostPath": {"path": "/"}})),
    "read_secrets": call("GET", "/api/v1/secrets"),
    "delete_alice_pod": call("DELETE", pods + "/jupyter-alice"),
    "with_his_hub_token": call("GET", pods + "/jupyter-alice", token=hub_token),
    "interfaces": sorted(line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:]),
    # every TCP socket he can see has his own address or loopback (none of alice's connections)
    "foreign_sockets": [line.split()[1] for line in open("/proc/net/tcp").read().splitlines()[1:]
                        if line.split()[1].split(":")[0] not in (MY_IP_HEX, "0100007F", "00000000")],
    "alice_server_without_token": http(f"http://{ALICE_IP}:8888/user/alice/api/contents"),
    "plugin": reach("127.0.0.1", PLUGIN_PORT),
    "etcd": reach("127.0.0.1", ETCD_PORT),
}
print("PROBE", json.dumps(out))
'''


def test_bob_s_notebook_gets_nothing_from_the_kubernetes_api(facility: RunningFacility) -> None:
    for user in ("alice", "bob"):
        oidc_login(facility.url, user)
    spawn_and_wait(facility.api, facility.url, "alice", CPU)
    spawn_and_wait(facility.api, facility.url, "bob", CPU)
    token = facility.api("POST", "/users/bob/tokens", json={"expires_in": 600, "note": "isolation"}).json()["token"]
    ips = {user: _pod_ip(facility, user) for user in ("alice", "bob")}
    plugin = int((facility.state_dir / "ports" / "interlink-slurm").read_text())
    etcd = int((facility.state_dir / "controlplane" / "ports" / "etcd").read_text())
    bob_hex = bytes(int(x) for x in ips["bob"].split("."))[::-1].hex().upper()
    code = (f"ALICE_IP = {ips['alice']!r}\nMY_IP_HEX = {bob_hex!r}\nPLUGIN_PORT = {plugin}\nETCD_PORT = {etcd}\n"
            + PROBE)
    printed = run_in_kernel(facility.url, "bob", token, code)
    seen = json.loads(printed.split("PROBE ", 1)[1])
    # Not root, no capabilities, no privilege escalation, none of the host's credentials or checkouts.
    assert (seen.pop("uid"), seen.pop("gid")) == (1000, 100)
    assert seen.pop("effective_capabilities") == "0000000000000000"
    assert seen.pop("no_new_privs") == "1"
    assert seen.pop("host_files") == []
    assert seen.pop("service_account_token") is False
    assert seen.pop("kubeconfig") is False
    # His own network namespace: his interfaces and sockets only; alice's server answers him only with her token.
    assert seen.pop("interfaces") == ["eth0", "lo"]
    assert seen.pop("foreign_sockets") == []
    assert seen.pop("alice_server_without_token") in (401, 403)
    assert seen.pop("plugin") == seen.pop("etcd") == "ConnectionRefusedError"
    # Anonymous: authenticated as system:anonymous and authorized for nothing; his hub token is no credential.
    assert seen.pop("with_his_hub_token") == 401
    assert seen == dict.fromkeys(seen, 403), seen
    alice = facility.api("GET", "/users/alice").json()["servers"][""]
    assert alice["ready"], "alice's server must have survived bob's attempts"
    for user in ("alice", "bob"):
        stop_and_wait(facility.api, user)


def _pod_ip(facility: RunningFacility, user: str) -> str:
    out = subprocess.run([str(build.binary("kubectl")), f"--kubeconfig={facility.kubeconfig}", "get", "pod", "-n",
                          "aifacility", f"jupyter-{user}", "-o", "jsonpath={.status.podIP}"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert out.startswith("10."), out
    return out
