"""The control plane of the embedded facility, as supervised components: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, the bootstrap (namespaces, RBAC, Kueue's manifests) and Kueue.

Everything listens on loopback and every client authenticates (see `pki`). The layout under
`<state-dir>/controlplane/`:

    pki/            certificates and keys (keys 0600)
    etcd/           etcd's data
    kubeconfigs/    one per component, the node agent's per node, the hub's (a service-account token)
    kueue/          the Kueue configuration rendered from the chart, and its webhook certificate
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aifacility.embedded.controlplane import build
from aifacility.embedded.controlplane.kubeconfig import kubeconfig, write_kubeconfig
from aifacility.embedded.controlplane.pki import APISERVER_NAMES, PKI, SERVICE_CLUSTER_IP, KeyPair
from aifacility.launcher.supervisor import Component, LaunchError, free_port, port_in_use

SERVICE_CIDR = "10.96.0.0/12"
HOST = "127.0.0.1"
# The identity the API server uses towards kubelets (the node agent checks it).
APISERVER_KUBELET_CLIENT = "kube-apiserver-kubelet-client"


def stable_port(state_dir: Path, name: str) -> int:
    """The port `name` had last time if it is still free, else a new one (remembered for next time): clients
    keep addresses (kubeconfigs, webhook configurations), so they stay the same across restarts."""
    path = state_dir / "ports" / name
    if path.exists():
        port = int(path.read_text())
        if not port_in_use(HOST, port):
            return port
    port = free_port()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(port))
    return port


def https_ok(url: str, ca: Path, client: KeyPair | None = None,
             accept: Callable[[int], bool] = lambda code: code == 200) -> Callable[[], bool]:
    """A readiness check over TLS (the control plane serves nothing in plain HTTP)."""
    def check() -> bool:
        ctx = ssl.create_default_context(cafile=str(ca))
        if client is not None:
            ctx.load_cert_chain(str(client.cert), str(client.key))
        try:
            with urllib.request.urlopen(url, timeout=2, context=ctx) as r:
                return accept(r.status)
        except urllib.error.HTTPError as e:
            return accept(e.code)
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return False
    return check


@dataclass
class Ports:
    etcd: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kueue_webhook: int
    kueue_visibility: int
    kueue_health: int
    kueue_metrics: int
    # Every node's kubelet endpoint (on the node's own InternalIP): one port per facility, so that two
    # facilities on one machine (a demo and the tests) never collide on the nodes' addresses.
    kubelet: int

    @classmethod
    def stable(cls, state_dir: Path) -> Ports:
        """For the one who starts the control plane: last time's ports where free, else new ones."""
        return cls(**{name: stable_port(state_dir, name.replace("_", "-")) for name in cls.__dataclass_fields__})

    @classmethod
    def saved(cls, state_dir: Path) -> Ports:
        """For its clients: the ports the control plane was started with."""
        try:
            return cls(**{name: int((state_dir / "ports" / name.replace("_", "-")).read_text())
                          for name in cls.__dataclass_fields__})
        except (OSError, ValueError) as e:
            raise LaunchError(f"the control plane in {state_dir} has not been started: {e}") from None


@dataclass
class ControlPlane:
    """Paths, certificates and the components of one control plane (one state directory)."""

    state_dir: Path
    namespace: str  # the facility's namespace (notebooks, jobs, the facility's LocalQueues)
    node_names: list[str] = field(default_factory=list)
    # True for the one who starts it; clients (the node agent) read the ports it was started with.
    starts: bool = True

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).resolve()
        self.dir = self.state_dir / "controlplane"
        self.pki = PKI(self.dir / "pki")
        self.ports = Ports.stable(self.dir) if self.starts else Ports.saved(self.dir)
        self.logs = self.state_dir / "logs"
        self.kubeconfigs = self.dir / "kubeconfigs"

    # ---- addresses and credentials ---------------------------------------------------------------------------

    @property
    def server(self) -> str:
        return f"https://{HOST}:{self.ports.apiserver}"

    @property
    def ca(self) -> Path:
        return self.pki.ca().cert

    @property
    def admin_kubeconfig(self) -> Path:
        """For people (the operator): cluster-admin, in the state directory, mode 0600."""
        return self.state_dir / "kubeconfig"

    def client_pair(self, name: str, cn: str, orgs: tuple[str, ...] = ()) -> KeyPair:
        return self.pki.leaf(name, cn, orgs=orgs)

    def component_kubeconfig(self, name: str, cn: str, orgs: tuple[str, ...] = ()) -> Path:
        return write_kubeconfig(self.kubeconfigs / f"{name}.kubeconfig",
                                kubeconfig(self.server, self.ca, client=self.client_pair(name, cn, orgs), user=cn))

    def node_kubeconfig(self, node: str) -> Path:
        """A kubelet's identity: system:node:<name> in system:nodes (the Node authorizer's subjects)."""
        return self.component_kubeconfig(f"node-{node}", f"system:node:{node}", ("system:nodes",))

    def kubelet_serving(self, node: str, ip: str) -> KeyPair:
        """The kubelet endpoint's serving certificate (the API server verifies it against the cluster CA)."""
        return self.pki.leaf(f"kubelet-{node}", f"system:node:{node}", orgs=("system:nodes",), client=False,
                             server=True, dns=(node,), ips=(ip,))

    def prepare(self) -> None:
        """Certificates and kubeconfigs (idempotent: existing ones are kept)."""
        p = self.pki
        p.ca()
        p.ca("front-proxy-ca")
        p.service_account_key()
        p.leaf("etcd-server", "etcd", client=True, server=True, dns=("localhost",), ips=(HOST,))
        p.leaf("apiserver-etcd-client", "kube-apiserver-etcd-client")
        p.leaf("apiserver", "kube-apiserver", client=False, server=True, dns=APISERVER_NAMES,
               ips=(HOST, SERVICE_CLUSTER_IP))
        p.leaf("apiserver-kubelet-client", APISERVER_KUBELET_CLIENT, orgs=("kubeadm:cluster-admins",))
        p.leaf("front-proxy-client", "front-proxy-client", ca="front-proxy-ca")
        write_kubeconfig(self.admin_kubeconfig, kubeconfig(
            self.server, self.ca, client=self.client_pair("admin", "aifacility-admin", ("system:masters",)),
            user="aifacility-admin", namespace=self.namespace))
        self.component_kubeconfig("controller-manager", "system:kube-controller-manager")
        self.component_kubeconfig("scheduler", "system:kube-scheduler")
        for node in self.node_names:
            self.node_kubeconfig(node)

    # ---- the components --------------------------------------------------------------------------------------

    def _pair_args(self, flag_cert: str, flag_key: str, pair: KeyPair) -> list[str]:
        return [f"{flag_cert}={pair.cert}", f"{flag_key}={pair.key}"]

    def etcd(self) -> Component:
        p, ports = self.pki, self.ports
        server = p.pair("etcd-server")
        peer = f"https://{HOST}:{ports.etcd_peer}"
        client = f"https://{HOST}:{ports.etcd}"
        argv = [
            str(build.binary("etcd")), "--name=aifacility", f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=aifacility={peer}", "--initial-cluster-state=new",
            "--client-cert-auth", f"--trusted-ca-file={self.ca}",
            *self._pair_args("--cert-file", "--key-file", server),
            "--peer-client-cert-auth", f"--peer-trusted-ca-file={self.ca}",
            *self._pair_args("--peer-cert-file", "--peer-key-file", server),
            "--listen-metrics-urls=", "--log-level=warn", "--quota-backend-bytes=2147483648",
        ]
        return Component(name="etcd", argv=argv, log=self.logs / "etcd.log",
                         ready=https_ok(f"{client}/health", self.ca, p.pair("apiserver-etcd-client")))

    def apiserver(self) -> Component:
        p, ports = self.pki, self.ports
        sa = p.service_account_key()
        argv = [
            str(build.binary("kube-apiserver")),
            f"--bind-address={HOST}", f"--secure-port={ports.apiserver}", f"--advertise-address={HOST}",
            # No Service networking here: nothing would route to the `kubernetes` Service's endpoints.
            "--endpoint-reconciler-type=none",
            f"--etcd-servers=https://{HOST}:{ports.etcd}", f"--etcd-cafile={self.ca}",
            *self._pair_args("--etcd-certfile", "--etcd-keyfile", p.pair("apiserver-etcd-client")),
            *self._pair_args("--tls-cert-file", "--tls-private-key-file", p.pair("apiserver")),
            f"--client-ca-file={self.ca}",
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=false", "--profiling=false",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={sa.cert}", f"--service-account-signing-key-file={sa.key}",
            *self._pair_args("--kubelet-client-certificate", "--kubelet-client-key",
                             p.pair("apiserver-kubelet-client")),
            f"--kubelet-certificate-authority={self.ca}", "--kubelet-preferred-address-types=InternalIP",
            # `kubectl exec` (WebSocket v5) is proxied as it is to kubelets whose Node declares the feature (ours
            # does); without these the API server would translate it to SPDY, which our kubelet does not speak.
            # Both are on by default in 1.36 (beta); named here because the node agent depends on them.
            "--feature-gates=ExtendWebSocketsToKubelet=true,NodeDeclaredFeatures=true",
            # The aggregation layer (Kueue's visibility API) authenticates to extension servers as front-proxy.
            f"--requestheader-client-ca-file={p.ca('front-proxy-ca').cert}",
            "--requestheader-allowed-names=front-proxy-client", "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group", "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            *self._pair_args("--proxy-client-cert-file", "--proxy-client-key-file", p.pair("front-proxy-client")),
        ]
        admin = p.pair("admin")
        return Component(name="kube-apiserver", argv=argv, log=self.logs / "kube-apiserver.log",
                         ready=https_ok(f"{self.server}/readyz", self.ca, admin))

    def controller_manager(self) -> Component:
        p = self.pki
        config = str(self.kubeconfigs / "controller-manager.kubeconfig")
        argv = [
            str(build.binary("kube-controller-manager")),
            f"--kubeconfig={config}", f"--authentication-kubeconfig={config}",
            f"--authorization-kubeconfig={config}",
            f"--bind-address={HOST}", f"--secure-port={self.ports.controller_manager}",
            "--leader-elect=false", "--use-service-account-credentials=true",
            f"--service-account-private-key-file={p.service_account_key().key}", f"--root-ca-file={self.ca}",
            *self._pair_args("--cluster-signing-cert-file", "--cluster-signing-key-file", p.ca()),
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--profiling=false",
        ]
        return Component(name="kube-controller-manager", argv=argv, log=self.logs / "kube-controller-manager.log",
                         ready=_tls_port_open(HOST, self.ports.controller_manager))

    def scheduler(self) -> Component:
        config = str(self.kubeconfigs / "scheduler.kubeconfig")
        argv = [
            str(build.binary("kube-scheduler")),
            f"--kubeconfig={config}", f"--authentication-kubeconfig={config}", f"--authorization-kubeconfig={config}",
            f"--bind-address={HOST}", f"--secure-port={self.ports.scheduler}", "--leader-elect=false",
            "--profiling=false",
        ]
        return Component(name="kube-scheduler", argv=argv, log=self.logs / "kube-scheduler.log",
                         ready=_tls_port_open(HOST, self.ports.scheduler))

    # ---- talking to the API server as the admin --------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(build.binary("kubectl")), f"--kubeconfig={self.admin_kubeconfig}", *args],
                              input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise LaunchError(f"kubectl {' '.join(args[:3])} failed: {proc.stderr.strip()[-2000:]}")
        return proc

    def apply(self, objects: list[dict[str, Any]], field_manager: str = "aifacility") -> None:
        """Server-side apply, as `kubectl apply --server-side` (CRDs first: objects of theirs need them)."""
        if not objects:
            return
        body = "\n".join(json.dumps(o) for o in objects)
        self.kubectl("apply", "--server-side", "--force-conflicts", f"--field-manager={field_manager}", "-f", "-",
                     input=body)

    def get_json(self, *args: str) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", "-o", "json", *args).stdout))

    def service_account_token(self, namespace: str, name: str, timeout: float = 60.0) -> str:
        """A long-lived token for a service account: a `kubernetes.io/service-account-token` Secret that the
        controller manager's token controller fills (what a process outside a pod uses in place of the
        projected token a pod would get)."""
        secret = f"{name}-token"
        self.apply([
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}},
            {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
             "metadata": {"name": secret, "namespace": namespace,
                          "annotations": {"kubernetes.io/service-account.name": name}}},
        ])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = self.get_json("secret", "-n", namespace, secret).get("data") or {}
            if data.get("token"):
                return base64.b64decode(data["token"]).decode()
            time.sleep(0.3)
        raise LaunchError(f"the token of service account {namespace}/{name} was not issued within {timeout:.0f} s "
                          f"(is kube-controller-manager running? see {self.logs / 'kube-controller-manager.log'})")

    def service_account_kubeconfig(self, namespace: str, name: str, file: str) -> Path:
        token = self.service_account_token(namespace, name)
        return write_kubeconfig(self.kubeconfigs / file, kubeconfig(
            self.server, self.ca, token=token, user=f"system:serviceaccount:{namespace}:{name}",
            namespace=namespace))


def _tls_port_open(host: str, port: int) -> Callable[[], bool]:
    """Ready once the component listens (its self-signed serving certificate is its own business)."""
    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            return False
    return check
