"""Each pod in its own network namespace: the host reaches it by address, it reaches the host services its
environment names and no other, and even a root pod capturing every packet on its interfaces sees none of
another pod's traffic."""

from __future__ import annotations

import http.server
import ipaddress
import json
import threading
import urllib.request
from collections.abc import Iterator

import pytest

from aifacility.embedded.nodeagent.podnet import PodNetwork, service_ports
from support.controlplane import Cluster, wait_for

NS = "aifacility"
SECRET = "alice-secret-cookie-8c1f"
OWN = "own-marker-55d2"

# Root, with the default capabilities (NET_RAW among them): a packet capture on every interface it has.
SNIFFER = r"""
import os, socket, time, urllib.request
names = [line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:]]
print("interfaces", sorted(names), flush=True)
print("host-service", urllib.request.urlopen(os.environ["SERVICE_URL"], timeout=5).read().decode(), flush=True)
try:
    socket.create_connection(("127.0.0.1", int(os.environ["ETCD_PORT"])), timeout=2)
    print("etcd reachable", flush=True)
except OSError as e:
    print("etcd unreachable", type(e).__name__, flush=True)
raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # ETH_P_ALL
raw.settimeout(0.2)
print("capturing", flush=True)
seen = {"packets": 0, "secret": 0, "own": 0}
end = time.time() + 8
while time.time() < end:
    if int(time.time() * 10) % 10 == 0:
        try:
            urllib.request.urlopen(os.environ["SERVICE_URL"] + "?" + os.environ["OWN"], timeout=1).read()
        except OSError:
            pass
    try:
        data = raw.recv(65535)
    except TimeoutError:
        continue
    seen["packets"] += 1
    seen["secret"] += os.environ["SECRET"].encode() in data
    seen["own"] += os.environ["OWN"].encode() in data
print("seen", seen["packets"], seen["secret"], seen["own"], flush=True)
"""


@pytest.fixture
def host_service() -> Iterator[int]:
    """A service on the host's loopback that a pod's environment names (as the hub's API is)."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"hello-from-the-host"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_service_ports_are_the_named_ones_less_the_clusters_own() -> None:
    env = ["http://127.0.0.1:8081/hub/api", "localhost:9000", "http://[::1]:7000/x", "http://10.0.0.1:5000",
           "127.0.0.1:2379", "127.0.0.1:123456"]
    assert service_ports(env, [6443], internal=[2379]) == [6443, 7000, 8081, 9000]


def test_pods_have_their_own_namespace_and_see_only_their_own_traffic(cluster: Cluster, host_service: int) -> None:
    etcd = cluster.embedded.plane.ports.etcd
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=f"""
apiVersion: v1
kind: Pod
metadata: {{name: net-server}}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 0
  securityContext: {{runAsUser: 1000, runAsGroup: 100}}
  containers:
  - name: main
    image: x
    command: [python3, -m, http.server, "8080", --bind, $(POD_IP)]
    env: [{{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}]
    ports: [{{containerPort: 8080}}]
    readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Pod
metadata: {{name: net-sniffer}}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 0
  restartPolicy: Never
  containers:
  - name: main
    image: x
    command: [python3, -c, {json.dumps(SNIFFER)}]
    env:
    - {{name: SERVICE_URL, value: "http://127.0.0.1:{host_service}/"}}
    - {{name: ETCD_PORT, value: "{etcd}"}}
    - {{name: SECRET, value: "{SECRET}"}}
    - {{name: OWN, value: "{OWN}"}}
""")
    try:
        cluster.kubectl("wait", "-n", NS, "--for=condition=Ready", "pod/net-server", "--timeout=60s")
        server_ip = cluster.pod(NS, "net-server")["status"]["podIP"]
        network = ipaddress.IPv4Network(f"{server_ip}/16", strict=False)
        assert network.is_private and not network.overlaps(ipaddress.IPv4Network("127.0.0.0/8"))

        def logs() -> str:
            return cluster.kubectl("logs", "-n", NS, "net-sniffer", check=False).stdout

        try:
            wait_for(lambda: "capturing" in logs(), timeout=60, message="the sniffer's capture")
        except AssertionError:
            raise AssertionError(f"{logs()}\n{cluster.pod(NS, 'net-sniffer')['status']}") from None
        # The host talks to the server pod by its address, with a secret the sniffer pod must not see.
        for _ in range(20):
            request = urllib.request.Request(f"http://{server_ip}:8080/?{SECRET}", headers={"Cookie": SECRET})
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.status == 200
        cluster.wait_phase(NS, "net-sniffer", "Succeeded", "Failed", timeout=60)
        out = logs()
        assert "interfaces ['eth0', 'lo']" in out, out
        assert "host-service hello-from-the-host" in out, out  # the host service its env names
        assert "etcd unreachable ConnectionRefusedError" in out, out  # the cluster's own ports: never
        _packets, secret, own = (int(x) for x in out.split("seen ")[1].split()[:3])
        assert own > 0, out  # the capture works: it sees its own requests
        assert secret == 0, out  # and nothing of the other pod's
    finally:
        cluster.kubectl("delete", "-n", NS, "pod", "net-server", "net-sniffer", "--grace-period=0", "--wait=false",
                        check=False)


def test_netns_made_for_a_pod_go_with_it(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-n", NS, "-f", "-", input="""
apiVersion: v1
kind: Pod
metadata: {name: net-short}
spec:
  automountServiceAccountToken: false
  restartPolicy: Never
  containers: [{name: main, image: x, command: [sleep, "1"]}]
""")
    pod = cluster.wait_phase(NS, "net-short", "Succeeded", "Failed", timeout=60)
    uid = pod["metadata"]["uid"]
    block = int(pod["status"]["podIP"].split(".")[1])
    net = PodNetwork(True, ipaddress.IPv4Network(f"10.{block}.0.0/16"))
    wait_for(lambda: net.netns_name(uid) not in net._namespaces(), message="the pod's namespace to go")
    cluster.kubectl("delete", "-n", NS, "pod", "net-short", "--wait=false", check=False)
