"""The RetrievedPodData the virtual kubelet sends to the plugin's `/create`, built from the pod and the objects
it references (fetched from the API by the node's kubelet loop, as `nodeagent.references` does for local nodes).

The plugin sees no Kubernetes API, so everything a container needs from it travels with the pod: the config
maps, secrets and projected volumes each container mounts (only those), and environment variables that refer
to config maps, secrets or the downward API resolved to plain values, as interLink's virtual kubelet does.
downwardAPI volumes become projected volumes (the plugin knows those) carrying the rendered files.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable, Mapping
from typing import Any

from aifacility.embedded.nodeagent.env import ConfigError, field_ref, resolve_env, resource_field_ref
from aifacility.embedded.nodeagent.volumes import object_data

Obj = dict[str, Any]
Lookup = Callable[[str, str], Obj | None]  # ("ConfigMap" | "Secret", name) -> object or None


def _projected_map(name: str, files: Mapping[str, bytes]) -> Obj:
    """A projected volume as interLink sends it: a config map named after the volume, file name -> content."""
    data: dict[str, str] = {}
    binary: dict[str, str] = {}
    for path, content in files.items():
        try:
            data[path] = content.decode()
        except UnicodeDecodeError:
            binary[path] = base64.b64encode(content).decode()
    out: Obj = {"metadata": {"name": name}, "data": data}
    if binary:
        out["binaryData"] = binary
    return out


def _pick(kind: str, src: Mapping[str, Any], lookup: Lookup, name: str) -> dict[str, bytes]:
    """The files of one config map / secret projection (items select and rename keys)."""
    obj = lookup(kind, name)
    if obj is None:
        if src.get("optional"):
            return {}
        raise ConfigError(f'MountVolume.SetUp failed: {kind.lower()} "{name}" not found')
    data = object_data(kind, obj)
    items = src.get("items")
    if not items:
        return data
    out: dict[str, bytes] = {}
    for item in items:
        key = str(item.get("key", ""))
        if key not in data:
            if src.get("optional"):
                continue
            raise ConfigError(f'MountVolume.SetUp failed: {kind.lower()} "{name}" has no key {key}')
        out[str(item.get("path") or key)] = data[key]
    return out


def _downward(items: list[Mapping[str, Any]], pod: Mapping[str, Any],
              allocatable: Mapping[str, str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for item in items:
        if "fieldRef" in item:
            value = field_ref(pod, str(item["fieldRef"].get("fieldPath", "")))
        else:
            ref = item.get("resourceFieldRef") or {}
            value = resource_field_ref(pod, str(ref.get("containerName", "")), ref, allocatable)
        out[str(item.get("path", ""))] = value.encode()
    return out


def _projected_files(vol: Mapping[str, Any], pod: Mapping[str, Any], lookup: Lookup,
                     allocatable: Mapping[str, str], token: str) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for source in (vol.get("projected") or {}).get("sources") or []:
        if "configMap" in source:
            cm = source["configMap"]
            name = str(cm.get("name", ""))
            if name == "kube-root-ca.crt" and lookup("ConfigMap", name) is None:
                # Published by the controller manager shortly after a namespace appears: a pod created in that
                # moment gets an empty bundle rather than never starting.
                files["ca.crt"] = b""
                continue
            files.update(_pick("ConfigMap", cm, lookup, name))
        elif "secret" in source:
            files.update(_pick("Secret", source["secret"], lookup, str(source["secret"].get("name", ""))))
        elif "downwardAPI" in source:
            files.update(_downward(source["downwardAPI"].get("items") or [], pod, allocatable))
        elif "serviceAccountToken" in source:
            files[str(source["serviceAccountToken"].get("path") or "token")] = token.encode()
    return files


def _trim(obj: Mapping[str, Any]) -> Obj:
    """A config map or secret with only what the plugin reads (no managedFields, resourceVersion, ...)."""
    meta = obj.get("metadata") or {}
    out: Obj = {"metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")}}
    for key in ("data", "binaryData", "stringData", "type"):
        if obj.get(key) is not None:
            out[key] = obj[key]
    return out


def retrieved_pod_data(pod: Mapping[str, Any], lookup: Lookup, allocatable: Mapping[str, str],
                       token: str) -> Obj:
    """RetrievedPodData for `/create`; ConfigError names the first missing config map, secret or key."""
    offload = copy.deepcopy(dict(pod))
    spec = offload.setdefault("spec", {})
    volumes: dict[str, Obj] = {}
    config_maps: dict[str, Obj] = {}
    secrets: dict[str, Obj] = {}
    projected: dict[str, Obj] = {}
    for vol in spec.get("volumes") or []:
        name = str(vol.get("name", ""))
        volumes[name] = vol
        if "configMap" in vol:
            src = vol["configMap"]
            obj = lookup("ConfigMap", str(src.get("name", "")))
            if obj is None and not src.get("optional"):
                raise ConfigError(f'MountVolume.SetUp failed for volume "{name}" : configmap '
                                  f'"{src.get("name")}" not found')
            if obj is not None:
                config_maps[name] = _trim(obj)
        elif "secret" in vol:
            src = vol["secret"]
            obj = lookup("Secret", str(src.get("secretName", "")))
            if obj is None and not src.get("optional"):
                raise ConfigError(f'MountVolume.SetUp failed for volume "{name}" : secret '
                                  f'"{src.get("secretName")}" not found')
            if obj is not None:
                secrets[name] = _trim(obj)
        elif "projected" in vol:
            projected[name] = _projected_map(name, _projected_files(vol, pod, lookup, allocatable, token))
        elif "downwardAPI" in vol:
            src = vol.pop("downwardAPI")
            projected[name] = _projected_map(name, _downward(src.get("items") or [], pod, allocatable))
            vol["projected"] = {"sources": [], **({"defaultMode": src["defaultMode"]}
                                                  if "defaultMode" in src else {})}
    retrieved: list[Obj] = []
    for group in ("initContainers", "containers"):
        for c in spec.get(group) or []:
            c["env"] = [{"name": k, "value": v} for k, v in resolve_env(pod, c, lookup, allocatable).items()]
            c.pop("envFrom", None)
            mounted = [m.get("name") for m in c.get("volumeMounts") or []]
            retrieved.append({
                "name": c.get("name"),
                "configMaps": [config_maps[m] for m in dict.fromkeys(mounted) if m in config_maps],
                "secrets": [secrets[m] for m in dict.fromkeys(mounted) if m in secrets],
                "projectedvolumemaps": [projected[m] for m in dict.fromkeys(mounted) if m in projected],
                "emptyDirs": [],
            })
    return {"pod": offload, "container": retrieved}
