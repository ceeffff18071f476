"""Turn a pod's volumes into files under its job dir and a list of binds per container.

Config maps, secrets and projected volumes are written once per pod (the job dir is on the filesystem shared
with the batch nodes, as in upstream's SHARED_FS mode); emptyDirs are per-pod dirs; hostPaths are bound as is.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .contract import ConfigMap, Container, KeyToPath, RetrievedPodData, Secret, Volume


class PodError(ValueError):
    """The pod cannot be run as sent; the message tells the user what to change."""


@dataclass(frozen=True)
class Bind:
    source: Path
    target: str
    read_only: bool


def _safe_rel(path: str, what: str) -> PurePosixPath:
    rel = PurePosixPath(path)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise PodError(f"{what}: path {path!r} must be relative and must not contain '..'")
    return rel


def _write_files(root: Path, files: dict[str, bytes], items: list[KeyToPath] | None, mode: int | None,
                 what: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    if items:
        missing = [i.key for i in items if i.key not in files]
        if missing:
            raise PodError(f"{what}: keys {missing} listed in items are not in the object")
        chosen = [(i.path, files[i.key], i.mode) for i in items]
    else:
        chosen = [(k, v, None) for k, v in files.items()]
    for rel, content, item_mode in chosen:
        target = root / _safe_rel(rel, what)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        target.chmod(item_mode if item_mode is not None else (mode if mode is not None else 0o644))


def _configmap_files(cm: ConfigMap, what: str) -> dict[str, bytes]:
    files = {k: v.encode() for k, v in (cm.data or {}).items()}
    for k, v in (cm.binaryData or {}).items():
        files[k] = _b64(v, f"{what} binaryData[{k}]")
    return files


def _secret_files(secret: Secret, what: str) -> dict[str, bytes]:
    files = {k: _b64(v, f"{what} data[{k}]") for k, v in (secret.data or {}).items()}
    files.update({k: v.encode() for k, v in (secret.stringData or {}).items()})
    return files


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PodError(f"{what} is not valid base64") from exc


class VolumePlanner:
    """Materialises volumes for one pod and answers which binds each container gets."""

    def __init__(self, data: RetrievedPodData, job_dir: Path, host_path_prefixes: list[str]) -> None:
        self.data = data
        self.host_path_prefixes = [os.path.normpath(p) for p in host_path_prefixes]
        self.vol_dir = job_dir / "volumes"
        spec = data.pod.spec
        assert spec is not None  # checked by the caller
        self.volumes: dict[str, Volume] = {v.name: v for v in spec.volumes or []}
        self._written: dict[str, Path] = {}
        self.config_maps: dict[str, ConfigMap] = {}
        self.secrets: dict[str, Secret] = {}
        self.projected: dict[str, ConfigMap] = {}
        for rc in data.container or []:
            for cm in rc.configMaps or []:
                self.config_maps[cm.metadata.name] = cm
            for s in rc.secrets or []:
                self.secrets[s.metadata.name] = s
            for pm in rc.projectedvolumemaps or []:
                self.projected[pm.metadata.name] = pm

    def _source(self, vol: Volume) -> tuple[Path, bool]:
        """The host dir backing a volume (written on first use) and whether it is read-only by nature."""
        if vol.hostPath is not None:
            path = os.path.normpath(vol.hostPath.path)
            allowed = any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.host_path_prefixes)
            if not path.startswith("/") or not allowed:
                raise PodError(
                    f"volume {vol.name!r}: hostPath {vol.hostPath.path!r} is not allowed on this site "
                    f"(allowed prefixes: {self.host_path_prefixes or 'none'})"
                )
            return Path(path), False
        if vol.name in self._written:
            return self._written[vol.name], vol.emptyDir is None
        root = self.vol_dir / vol.name
        what = f"volume {vol.name!r}"
        if vol.emptyDir is not None:
            root.mkdir(parents=True, exist_ok=True)
            root.chmod(0o777)
            read_only = False
        elif vol.configMap is not None:
            cm = self.config_maps.get(vol.configMap.name)
            if cm is None and not vol.configMap.optional:
                raise PodError(f"{what}: config map {vol.configMap.name!r} was not sent with the pod")
            files = _configmap_files(cm, what) if cm else {}
            _write_files(root, files, vol.configMap.items, vol.configMap.defaultMode, what)
            read_only = True
        elif vol.secret is not None:
            sec = self.secrets.get(vol.secret.secretName)
            if sec is None and not vol.secret.optional:
                raise PodError(f"{what}: secret {vol.secret.secretName!r} was not sent with the pod")
            files = _secret_files(sec, what) if sec else {}
            mode = vol.secret.defaultMode if vol.secret.defaultMode is not None else 0o600
            _write_files(root, files, vol.secret.items, mode, what)
            read_only = True
        elif vol.projected is not None:
            # interLink sends each projected volume as a config map named after the volume.
            pm = self.projected.get(vol.name)
            files = _configmap_files(pm, what) if pm else {}
            _write_files(root, files, None, vol.projected.defaultMode, what)
            read_only = True
        else:
            kinds = sorted(k for k in (vol.model_extra or {}) if k != "name")
            raise PodError(
                f"{what} of type {kinds or 'unknown'} is not supported: use configMap, secret, projected, "
                "emptyDir or hostPath"
            )
        self._written[vol.name] = root
        return root, read_only

    def binds(self, container: Container) -> list[Bind]:
        out: list[Bind] = []
        for m in container.volumeMounts or []:
            vol = self.volumes.get(m.name)
            if vol is None:
                raise PodError(f"container {container.name!r} mounts {m.name!r}, which is not a pod volume")
            if not m.mountPath.startswith("/"):
                raise PodError(f"container {container.name!r}: mountPath {m.mountPath!r} must be absolute")
            src, ro = self._source(vol)
            if m.subPath:
                src = src / _safe_rel(m.subPath, f"volume mount {m.name!r} subPath")
                if vol.emptyDir is not None:
                    src.mkdir(parents=True, exist_ok=True)
            out.append(Bind(src, os.path.normpath(m.mountPath), ro or m.readOnly))
        return out
