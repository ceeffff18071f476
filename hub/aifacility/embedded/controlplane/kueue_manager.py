"""The real Kueue controller manager, installed the way a site installs it: its own release of Kueue's chart.

Kueue's chart (from the Kueue Go module the control plane is built from) is rendered by helm with the values file a
site uses (`charts/kueue-values.yaml`) in Kueue's own namespace, exactly as `helm install` would.
From the rendered manifests everything is applied except what runs a container; the few changes are those
that running the manager as a process on loopback needs, and nothing else:
- the Deployment is not applied: `kueue` runs as a supervised process with the Deployment's own arguments;
- its Services become ExternalName services onto 127.0.0.1 (no Service networking here), with the ports it
  listens on, and the webhook configurations and the APIService point at those ports;
- its configuration binds health, metrics, webhook and visibility servers to loopback, serves the webhooks with
  a certificate from `aifacility up` (in place of Kueue's in-pod certificate rotation, which writes a Secret a
  kubelet would mount) and runs without leader election (one replica).
The manager runs as the Deployment's container would (see `component`) and authenticates as the chart's service
account, with that account's RBAC.
"""

from __future__ import annotations

import base64
import copy
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from aifacility.embedded.controlplane import build
from aifacility.embedded.controlplane.plane import HOST, ControlPlane
from aifacility.embedded.controlplane.versions import GOMOD_DIR, versions
from aifacility.launcher.supervisor import Component, LaunchError, http_ok

REPO = Path(__file__).resolve().parents[4]
CHART = REPO / "charts" / "aifacility"
INSTALL_HELM = REPO / "charts" / "install-helm.sh"
# Kueue is a release of its own, in a namespace of its own (see charts/kueue-values.yaml for why).
KUEUE_VALUES = REPO / "charts" / "kueue-values.yaml"
KUEUE_RELEASE = "kueue"
KUEUE_NAMESPACE = "kueue-system"
# Kinds of the rendered chart that run containers or need a kubelet: the process stands in for them.
NOT_APPLIED = {"Deployment", "PodDisruptionBudget"}
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def helm_binary() -> str:
    """helm, installed once per machine by `charts/install-helm.sh` (prints its path)."""
    found = shutil.which("helm")
    if found:
        return found
    proc = subprocess.run(["bash", str(INSTALL_HELM)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise LaunchError(f"could not install helm: {proc.stderr.strip()[-1000:]}")
    return proc.stdout.strip().splitlines()[-1]


def kueue_chart_dir() -> Path:
    """Kueue's chart inside the Kueue module of the control plane's go.mod (in the Go module cache)."""
    try:
        go = build.go_command()
    except build.BuildError as e:
        raise LaunchError(str(e)) from None
    proc = subprocess.run([go, "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/kueue"], cwd=GOMOD_DIR,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "GOFLAGS": "-mod=readonly"})
    chart = Path(proc.stdout.strip()) / "charts" / "kueue"
    if proc.returncode != 0 or not (chart / "Chart.yaml").exists():
        raise LaunchError(f"Kueue's chart is not in the Go module cache ({proc.stderr.strip()[-500:]}); "
                          "run `make setup`")
    return chart


def render_kueue_release(*, values: tuple[Path, ...] = (KUEUE_VALUES,)) -> list[dict[str, Any]]:
    """Kueue's release as `helm template` renders Kueue's own chart with `values` in KUEUE_NAMESPACE.

    The chart comes from Kueue's Go module, the version the control plane is built from; a site installs the
    same version from Kueue's OCI registry with the same values file (charts/kueue-values.yaml)."""
    argv = [helm_binary(), "template", KUEUE_RELEASE, str(kueue_chart_dir()), "--namespace", KUEUE_NAMESPACE,
            "--kube-version", versions().kubernetes.lstrip("v")]
    for v in values:
        argv += ["-f", str(v)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise LaunchError(f"helm template of Kueue's chart failed: {proc.stderr.strip()[-2000:]}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


class KueueManager:
    """Kueue's manifests for the embedded control plane, and the manager process."""

    def __init__(self, plane: ControlPlane, rendered: list[dict[str, Any]]) -> None:
        self.plane = plane
        self.rendered = rendered
        self.dir = plane.dir / "kueue"
        deployment = self._one("Deployment")
        self.namespace: str = deployment["metadata"]["namespace"]
        pod = deployment["spec"]["template"]["spec"]
        self.service_account: str = pod["serviceAccountName"]
        self.container: dict[str, Any] = pod["containers"][0]
        config_map = self._one("ConfigMap", lambda d: "controller_manager_config.yaml" in (d.get("data") or {}))
        self.config: dict[str, Any] = yaml.safe_load(config_map["data"]["controller_manager_config.yaml"])

    def _one(self, kind: str, match: Any = lambda d: True) -> dict[str, Any]:
        found = [d for d in self.rendered if d.get("kind") == kind and match(d)]
        if len(found) != 1:
            raise LaunchError(f"the rendered Kueue chart has {len(found)} {kind} objects where one was expected")
        return found[0]

    @property
    def webhook_service(self) -> str:
        return next(d["metadata"]["name"] for d in self.rendered
                    if d.get("kind") == "Service" and "webhook" in d["metadata"]["name"])

    # ---- what is applied -------------------------------------------------------------------------------------

    def _files(self, directory: str, files: dict[str, bytes]) -> Path:
        """A directory of files as a Secret volume would hold them (keys 0600)."""
        path = self.dir / directory
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name, data in files.items():
            tmp = path / f".{name}.tmp"
            tmp.write_bytes(data)
            tmp.chmod(0o600)
            tmp.replace(path / name)
        return path

    def certificates(self) -> None:
        """The webhook server's certificate, for the name the API server checks (`<service>.<ns>.svc`), and the
        metrics and visibility servers': what the chart's cert-manager or Kueue's own rotation would put in the
        pod."""
        svc = f"{self.webhook_service}.{self.namespace}.svc"
        webhook = self.plane.pki.leaf("kueue-webhook", svc, client=False, server=True,
                                      dns=(svc, f"{svc}.cluster.local"), ips=(HOST,))
        self._files("webhook-certs", {"tls.crt": webhook.cert.read_bytes(), "tls.key": webhook.key.read_bytes()})
        metrics = self.plane.pki.leaf("kueue-metrics", "kueue-metrics", client=False, server=True, ips=(HOST,))
        self._files("metrics-certs", {"tls.crt": metrics.cert.read_bytes(), "tls.key": metrics.key.read_bytes()})
        visibility_svc = next(d["metadata"]["name"] for d in self.rendered
                              if d.get("kind") == "Service" and "visibility" in d["metadata"]["name"])
        svc = f"{visibility_svc}.{self.namespace}.svc"
        visibility = self.plane.pki.leaf("kueue-visibility", svc, client=False, server=True, dns=(svc,), ips=(HOST,))
        self._files("visibility", {"tls.crt": visibility.cert.read_bytes(), "tls.key": visibility.key.read_bytes()})

    def manifests(self) -> list[dict[str, Any]]:
        ports = self.plane.ports
        ca_bundle = base64.b64encode(self.plane.ca.read_bytes()).decode()
        out: list[dict[str, Any]] = []
        for doc in self.rendered:
            doc = copy.deepcopy(doc)
            kind = doc.get("kind")
            if kind in NOT_APPLIED:
                continue
            if kind == "Service":
                name = doc["metadata"]["name"]
                port = (ports.kueue_webhook if "webhook" in name else
                        ports.kueue_visibility if "visibility" in name else ports.kueue_metrics)
                doc["spec"] = {"type": "ExternalName", "externalName": HOST,
                               "ports": [{"name": "https", "port": port, "protocol": "TCP", "targetPort": port}]}
            elif kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
                for hook in doc.get("webhooks") or []:
                    svc = hook["clientConfig"].get("service")
                    if svc:
                        svc["port"] = ports.kueue_webhook
                    hook["clientConfig"]["caBundle"] = ca_bundle
            elif kind == "APIService":
                doc["spec"]["service"]["port"] = ports.kueue_visibility
            out.append(doc)
        # CRDs first, then namespaced objects whose namespace must exist.
        return sorted(out, key=lambda d: 0 if d.get("kind") == "CustomResourceDefinition" else 1)

    def manager_config(self) -> Path:
        ports = self.plane.ports
        cfg = copy.deepcopy(self.config)
        cfg["namespace"] = self.namespace
        cfg["health"] = {**(cfg.get("health") or {}), "healthProbeBindAddress": f"{HOST}:{ports.kueue_health}"}
        cfg["metrics"] = {**(cfg.get("metrics") or {}), "bindAddress": f"{HOST}:{ports.kueue_metrics}"}
        cfg["webhook"] = {**(cfg.get("webhook") or {}), "host": HOST, "port": ports.kueue_webhook}
        cfg["visibilityServer"] = {"bindAddress": HOST, "bindPort": ports.kueue_visibility}
        cfg["internalCertManagement"] = {"enable": False}
        cfg["leaderElection"] = {**(cfg.get("leaderElection") or {}), "leaderElect": False}
        path = self.dir / "controller_manager_config.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def install(self, notebook_namespace: dict[str, Any]) -> Path:
        """Apply Kueue's manifests and write the manager's configuration and credentials; `notebook_namespace`
        is the facility's Namespace object, which Kueue's webhooks must select."""
        left_out = unmanaged_webhooks(self.rendered, notebook_namespace)
        if left_out:
            raise LaunchError(f"Kueue's webhooks leave the notebooks' namespace "
                              f"{notebook_namespace['metadata']['name']!r} out ({', '.join(left_out)}): "
                              "managedJobsNamespaceSelector in charts/kueue-values.yaml must select its labels")
        self.plane.kubectl("create", "namespace", self.namespace, check=False)
        self.plane.apply(self.manifests(), field_manager="aifacility-kueue")
        self.certificates()
        self.manager_config()
        # What a pod of the Deployment would find mounted: its service account's token, the CA, its namespace.
        token = self.plane.service_account_token(self.namespace, self.service_account)
        return self._files("serviceaccount", {"token": token.encode(), "ca.crt": self.plane.ca.read_bytes(),
                                              "namespace": self.namespace.encode()})

    def component(self) -> Component:
        """The manager as the Deployment's container runs it: `/manager` with the Deployment's arguments, in a
        bubblewrap sandbox whose file system holds what the pod's volumes would (configuration, certificates,
        the service account's token) at the paths the chart mounts them, and the in-cluster environment."""
        ports = self.plane.ports
        mounts = {
            "/manager": str(build.binary("kueue")),
            "/controller_manager_config.yaml": str(self.dir / "controller_manager_config.yaml"),
            "/tmp/k8s-webhook-server/serving-certs": str(self.dir / "webhook-certs"),
            "/etc/kueue/metrics/certs": str(self.dir / "metrics-certs"),
            SERVICE_ACCOUNT_DIR: str(self.dir / "serviceaccount"),
        }
        argv = [shutil.which("bwrap") or "bwrap", "--die-with-parent", "--proc", "/proc", "--dev", "/dev",
                "--tmpfs", "/tmp", "--ro-bind", "/etc/hosts", "/etc/hosts"]
        for target, source in mounts.items():
            argv += ["--ro-bind", source, target]
        argv += ["--bind", str(self.dir / "visibility"), "/visibility",
                 "--setenv", "KUBERNETES_SERVICE_HOST", HOST,
                 "--setenv", "KUBERNETES_SERVICE_PORT", str(ports.apiserver), "--chdir", "/",
                 *self.container.get("command", ["/manager"]), *(self.container.get("args") or [])]
        return Component(name="Kueue", argv=argv, log=self.plane.logs / "kueue.log",
                         ready=http_ok(f"http://{HOST}:{ports.kueue_health}/readyz", accept=lambda code: code == 200))


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) selects an object with these labels."""
    if selector is None:
        return True
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def unmanaged_webhooks(rendered: list[dict[str, Any]], namespace: dict[str, Any]) -> list[str]:
    """The Job and Pod webhooks of the rendered chart that leave the Namespace object `namespace` out (it must be
    covered, or queued sessions are never gated and Jobs never suspended there)."""
    meta = namespace["metadata"]
    # The API server gives every namespace this label, so selectors may use it.
    labels = {**(meta.get("labels") or {}), "kubernetes.io/metadata.name": meta["name"]}
    out = []
    for doc in rendered:
        if doc.get("kind") not in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            continue
        for hook in doc.get("webhooks") or []:
            if hook["name"].split(".")[0] in ("mpod", "vpod", "mjob", "vjob") and \
                    not _selects(hook.get("namespaceSelector"), labels):
                out.append(f"{doc['kind']} {hook['name']}")
    return out
