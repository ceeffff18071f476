"""A pod's volumes as host directories, and its containers' volumeMounts as sandbox mounts.

Layout (all under the cluster's state dir, so it survives restarts where Kubernetes' storage would):
- emptyDir: `pods/<ns>/<pod>_<uid>/volumes/<name>` (gone with the pod);
- configMap, secret, projected, downwardAPI: rendered into files there, read-only in the container;
- persistentVolumeClaim: `volumes/<namespace>/<claim>` (what the PV controller provisions);
- nfs: `nfs/<server><path>`; hostPath: the host path itself.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aifacility.embedded.nodeagent.env import Lookup, expand, field_ref, resource_field_ref
from aifacility.embedded.nodeagent.sandbox import Mount

# Volume sources rendered from API objects: the kubelet mounts these read-only whatever the mount says.
READ_ONLY_SOURCES = ("configMap", "secret", "projected", "downwardAPI")
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class VolumeError(Exception):
    """A volume cannot be set up yet (missing config map, secret or claim): the kubelet's FailedMount."""


@dataclass(frozen=True)
class PreparedVolume:
    path: Path
    read_only: bool


def pvc_path(state_dir: Path, namespace: str, claim: str) -> Path:
    return state_dir / "volumes" / namespace / claim


def nfs_path(state_dir: Path, server: str, path: str) -> Path:
    return state_dir / "nfs" / server / path.lstrip("/")


def _safe_join(root: Path, rel: str) -> Path:
    """root/rel, refusing paths that climb out (`..`), as the kubelet's atomic writer does."""
    target = (root / rel).resolve()
    if not str(target).startswith(str(root.resolve()) + os.sep) and target != root.resolve():
        raise VolumeError(f"the path {rel!r} must not leave the volume")
    return target


def _write(root: Path, rel: str, data: bytes, mode: int) -> None:
    target = _safe_join(root, rel)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    target.chmod(mode)


def object_data(kind: str, obj: Mapping[str, Any]) -> dict[str, bytes]:
    """The files a config map or secret projects (key -> bytes), as the kubelet writes them."""
    out: dict[str, bytes] = {}
    if kind == "Secret":
        for k, v in (obj.get("data") or {}).items():
            out[k] = base64.b64decode(v)
        for k, v in (obj.get("stringData") or {}).items():
            out[k] = str(v).encode()
    else:
        for k, v in (obj.get("data") or {}).items():
            out[k] = str(v).encode()
        for k, v in (obj.get("binaryData") or {}).items():
            out[k] = base64.b64decode(v)
    return out


def _render_keys(root: Path, kind: str, name: str, src: Mapping[str, Any], lookup: Lookup,
                 default_mode: int, *, missing_ok: bool = False) -> None:
    obj = lookup(kind, name)
    if obj is None:
        if src.get("optional") or missing_ok:
            return
        raise VolumeError(f'{kind.lower()} "{name}" not found')
    data = object_data(kind, obj)
    items = src.get("items")
    if items:
        for item in items:
            key = item.get("key", "")
            if key not in data:
                if src.get("optional"):
                    continue
                raise VolumeError(f"configmap references non-existent config key: {key}" if kind == "ConfigMap"
                                  else f"references non-existent secret key: {key}")
            _write(root, item.get("path") or key, data[key], int(item.get("mode") or default_mode))
    else:
        for key, value in data.items():
            _write(root, key, value, default_mode)


def _render_downward(root: Path, items: list[Mapping[str, Any]], pod: Mapping[str, Any],
                     node_allocatable: Mapping[str, str], default_mode: int) -> None:
    for item in items:
        if "fieldRef" in item:
            value = field_ref(pod, str(item["fieldRef"].get("fieldPath", "")))
        else:
            ref = item.get("resourceFieldRef") or {}
            value = resource_field_ref(pod, str(ref.get("containerName", "")), ref, node_allocatable)
        _write(root, str(item.get("path", "")), value.encode(), int(item.get("mode") or default_mode))


def prepare_volumes(pod: Mapping[str, Any], pod_dir: Path, state_dir: Path, lookup: Lookup,
                    node_allocatable: Mapping[str, str], token: Callable[[], str]) -> dict[str, PreparedVolume]:
    """Create or render every volume of the pod; VolumeError names the first one that cannot be set up."""
    namespace = str(pod["metadata"].get("namespace") or "default")
    out: dict[str, PreparedVolume] = {}
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        name = str(vol.get("name", ""))
        local = pod_dir / "volumes" / name
        try:
            out[name] = _prepare_one(vol, name, local, namespace, pod, state_dir, lookup, node_allocatable, token)
        except VolumeError as e:
            raise VolumeError(f'MountVolume.SetUp failed for volume "{name}" : {e}') from None
    return out


def _prepare_one(vol: Mapping[str, Any], name: str, local: Path, namespace: str, pod: Mapping[str, Any],
                 state_dir: Path, lookup: Lookup, node_allocatable: Mapping[str, str],
                 token: Callable[[], str]) -> PreparedVolume:
    if "emptyDir" in vol:
        local.mkdir(parents=True, exist_ok=True)
        return PreparedVolume(local, False)
    if "persistentVolumeClaim" in vol:
        src = vol["persistentVolumeClaim"]
        claim = str(src.get("claimName", ""))
        if lookup("PersistentVolumeClaim", claim) is None:
            raise VolumeError(f'persistentvolumeclaim "{claim}" not found')
        path = pvc_path(state_dir, namespace, claim)
        path.mkdir(parents=True, exist_ok=True)
        return PreparedVolume(path, bool(src.get("readOnly")))
    if "nfs" in vol:
        src = vol["nfs"]
        path = nfs_path(state_dir, str(src.get("server", "")), str(src.get("path", "/")))
        path.mkdir(parents=True, exist_ok=True)
        return PreparedVolume(path, bool(src.get("readOnly")))
    if "hostPath" in vol:
        src = vol["hostPath"]
        path = Path(str(src.get("path", "")))
        kind = src.get("type") or ""
        if kind == "DirectoryOrCreate":
            path.mkdir(parents=True, exist_ok=True)
        elif kind == "FileOrCreate" and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        elif kind in ("Directory", "File", "Socket") and not path.exists():
            raise VolumeError(f"hostPath type check failed: {path} does not exist")
        return PreparedVolume(path, False)
    # Rendered volumes are written afresh at every start, as the kubelet's atomic writer does.
    _render_volume(vol, local, pod, lookup, node_allocatable, token)
    return PreparedVolume(local, True)


def _render_volume(vol: Mapping[str, Any], local: Path, pod: Mapping[str, Any], lookup: Lookup,
                   node_allocatable: Mapping[str, str], token: Callable[[], str]) -> None:
    """Write a configMap, secret, downwardAPI or projected volume's files into `local` (made empty first)."""
    if local.exists():
        shutil.rmtree(local)
    local.mkdir(parents=True)
    if "configMap" in vol:
        src = vol["configMap"]
        _render_keys(local, "ConfigMap", str(src.get("name", "")), src, lookup, int(src.get("defaultMode") or 0o644))
    elif "secret" in vol:
        src = vol["secret"]
        _render_keys(local, "Secret", str(src.get("secretName", "")), src, lookup,
                     int(src.get("defaultMode") or 0o644))
    elif "downwardAPI" in vol:
        src = vol["downwardAPI"]
        _render_downward(local, src.get("items") or [], pod, node_allocatable, int(src.get("defaultMode") or 0o644))
    elif "projected" in vol:
        src = vol["projected"]
        mode = int(src.get("defaultMode") or 0o644)
        for source in src.get("sources") or []:
            if "configMap" in source:
                cm = source["configMap"]
                # Every namespace has kube-root-ca.crt on a real cluster; the API here is plain http, so an
                # absent one is an empty CA bundle rather than a pod that never starts.
                _render_keys(local, "ConfigMap", str(cm.get("name", "")), cm, lookup, mode,
                             missing_ok=cm.get("name") == "kube-root-ca.crt")
                if cm.get("name") == "kube-root-ca.crt" and not (local / "ca.crt").exists():
                    _write(local, "ca.crt", b"", mode)
            elif "secret" in source:
                sec = source["secret"]
                _render_keys(local, "Secret", str(sec.get("name", "")), sec, lookup, mode)
            elif "downwardAPI" in source:
                _render_downward(local, source["downwardAPI"].get("items") or [], pod, node_allocatable, mode)
            elif "serviceAccountToken" in source:
                _write(local, str(source["serviceAccountToken"].get("path") or "token"), token().encode(), mode)
    else:
        kinds = ", ".join(k for k in vol if k != "name") or "none"
        raise VolumeError(f"volume type {kinds} is not supported by the node agent (supported: "
                          "emptyDir, configMap, secret, projected, downwardAPI, persistentVolumeClaim, nfs, "
                          "hostPath)")


def refresh_rendered(pod: Mapping[str, Any], pod_dir: Path, lookup: Lookup, node_allocatable: Mapping[str, str],
                     token: Callable[[], str]) -> list[str]:
    """Render the pod's configMap, secret, projected and downwardAPI volumes again and bring their files in place up
    to date (the kubelet's sync of a running pod): each file replaced whole, so a reader sees the old content or the
    new, never half; keys that went away are removed. A volume that cannot be rendered now keeps its files. Returns
    the volumes whose files changed. (A subPath mount of one file keeps the old one, as with the kubelet.)"""
    changed = []
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        if not any(kind in vol for kind in READ_ONLY_SOURCES):
            continue
        name = str(vol.get("name", ""))
        local = pod_dir / "volumes" / name
        fresh = pod_dir / "volumes" / f"..{name}.refresh"
        try:
            _render_volume(vol, fresh, pod, lookup, node_allocatable, token)
        except VolumeError:
            shutil.rmtree(fresh, ignore_errors=True)
            continue
        if _sync_tree(fresh, local):
            changed.append(name)
        shutil.rmtree(fresh, ignore_errors=True)
    return changed


def _files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file()} if root.exists() else {}


def _sync_tree(source: Path, target: Path) -> bool:
    """Make the files under `target` those under `source` (moved over); whether anything changed."""
    new, old = _files(source), _files(target)
    changed = False
    for rel, path in new.items():
        dest = target / rel
        if rel in old and old[rel].read_bytes() == path.read_bytes() and \
                old[rel].stat().st_mode == path.stat().st_mode:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
        changed = True
    for rel, path in old.items():
        if rel not in new:
            path.unlink(missing_ok=True)
            changed = True
    return changed


def container_mounts(container: Mapping[str, Any], volumes: Mapping[str, PreparedVolume],
                     env: Mapping[str, str]) -> list[Mount]:
    """A container's volumeMounts; subPath (and subPathExpr with `$(VAR)`) selects a directory inside."""
    mounts: list[Mount] = []
    for vm in container.get("volumeMounts") or []:
        vol = volumes.get(str(vm.get("name", "")))
        if vol is None:
            raise VolumeError(f"volumeMount {vm.get('name')!r} refers to no volume of the pod")
        source = vol.path
        sub = vm.get("subPath") or (expand(str(vm["subPathExpr"]), env) if vm.get("subPathExpr") else "")
        if sub:
            source = _safe_join(vol.path, str(sub))
            if not source.exists():
                source.mkdir(parents=True, exist_ok=True)
        mounts.append(Mount(source, str(vm.get("mountPath", "")), bool(vm.get("readOnly")) or vol.read_only))
    return mounts
