"""Container environment: env/envFrom resolution and Kubernetes' `$(VAR)` expansion.

The expansion follows Kubernetes' `third_party/forked/golang/expansion` exactly: `$(NAME)` is replaced when
NAME is defined earlier in the container's env, `$$` is an escaped `$`, and unknown or incomplete references
are left as they are.
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Callable, Mapping
from decimal import ROUND_CEILING, Decimal
from typing import Any

from aifacility.facility.quantity import parse_quantity


class ConfigError(Exception):
    """The env refers to something missing: the kubelet's CreateContainerConfigError."""


def expand(text: str, env: Mapping[str, str]) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            close = text.find(")", i + 2)
            if close < 0:
                out.append("$(")
                i += 2
                continue
            name = text[i + 2:close]
            out.append(env[name] if name in env else f"$({name})")
            i = close + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


def _dig(obj: Any, path: str) -> Any:
    """metadata.labels['app'] style field paths of the downward API."""
    if "[" in path:
        head, _, rest = path.partition("[")
        key = rest.rstrip("]").strip("'\"")
        return ((_dig(obj, head) or {}) if isinstance(_dig(obj, head), dict) else {}).get(key)
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def field_ref(pod: Mapping[str, Any], path: str) -> str:
    if path in ("metadata.labels", "metadata.annotations"):
        values = _dig(pod, path) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
    if path == "status.podIPs":
        return ",".join(ip.get("ip", "") for ip in (pod.get("status") or {}).get("podIPs") or [])
    if path == "spec.serviceAccountName":
        return str((pod.get("spec") or {}).get("serviceAccountName") or "default")
    value = _dig(pod, path)
    return "" if value is None else str(value)


def resource_field_ref(pod: Mapping[str, Any], container_name: str, ref: Mapping[str, Any],
                       node_allocatable: Mapping[str, str]) -> str:
    """requests.cpu / limits.memory ... with the divisor; an unset limit is the node's allocatable."""
    name = ref.get("containerName") or container_name
    resource = str(ref.get("resource", ""))
    kind, _, res = resource.partition(".")
    containers = (pod.get("spec") or {}).get("containers") or []
    container: Mapping[str, Any] = next((c for c in containers if c.get("name") == name), {})
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(res)
    if value is None and kind == "requests":
        value = (resources.get("limits") or {}).get(res)
    if value is None:
        value = node_allocatable.get(res, "0") if kind == "limits" else "0"
    divisor = parse_quantity(ref.get("divisor") or "1")
    if divisor == 0:
        divisor = Decimal(1)
    # The kubelet rounds up (a 250m cpu request is "1" core).
    result = (parse_quantity(value) / divisor).to_integral_value(rounding=ROUND_CEILING)
    return str(int(result))


Lookup = Callable[[str, str], dict[str, Any] | None]  # (kind "Secret"|"ConfigMap", name) -> object or None


def _key_ref(kind: str, ref: Mapping[str, Any], lookup: Lookup, namespace: str) -> str | None:
    name = str(ref.get("name", ""))
    obj = lookup(kind, name)
    optional = bool(ref.get("optional"))
    if obj is None:
        if optional:
            return None
        raise ConfigError(f'{kind.lower()} "{name}" not found')
    key = str(ref.get("key", ""))
    if kind == "Secret":
        data = obj.get("data") or {}
        if key in data:
            return base64.b64decode(data[key]).decode(errors="replace")
        if key in (obj.get("stringData") or {}):
            return str(obj["stringData"][key])
    else:
        if key in (obj.get("data") or {}):
            return str(obj["data"][key])
    if optional:
        return None
    raise ConfigError(f"couldn't find key {key} in {kind} {namespace}/{name}")


def default_path(pod_path: str | None) -> str:
    """The venv's bin first (so `jupyterhub-singleuser` resolves), then the host's PATH."""
    host = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    if pod_path:
        return f"{pod_path}:{host}"
    return f"{sys.prefix}/bin:{host}"


def resolve_env(pod: Mapping[str, Any], container: Mapping[str, Any], lookup: Lookup,
                node_allocatable: Mapping[str, str]) -> dict[str, str]:
    """A container's env and envFrom resolved to plain values, in Kubernetes' order (envFrom, then env; later
    wins). Shared by the local node agent and the interLink virtual node, which sends the values to its plugin."""
    namespace = str((pod.get("metadata") or {}).get("namespace") or "default")
    env: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        prefix = str(src.get("prefix") or "")
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            ref = src.get(key)
            if not ref:
                continue
            obj = lookup(kind, str(ref.get("name", "")))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{kind.lower()} "{ref.get("name")}" not found')
            for k, v in (obj.get("data") or {}).items():
                env[prefix + k] = base64.b64decode(v).decode(errors="replace") if kind == "Secret" else str(v)
            if kind == "Secret":
                for k, v in (obj.get("stringData") or {}).items():
                    env[prefix + k] = str(v)
    for var in container.get("env") or []:
        name = str(var.get("name", ""))
        if "valueFrom" not in var:
            env[name] = expand(str(var.get("value") or ""), env)
            continue
        src = var["valueFrom"] or {}
        value: str | None
        if "fieldRef" in src:
            value = field_ref(pod, str(src["fieldRef"].get("fieldPath", "")))
        elif "resourceFieldRef" in src:
            value = resource_field_ref(pod, str(container.get("name")), src["resourceFieldRef"], node_allocatable)
        elif "secretKeyRef" in src:
            value = _key_ref("Secret", src["secretKeyRef"], lookup, namespace)
        elif "configMapKeyRef" in src:
            value = _key_ref("ConfigMap", src["configMapKeyRef"], lookup, namespace)
        else:
            value = ""
        if value is not None:
            env[name] = value
    return env


def container_env(pod: Mapping[str, Any], container: Mapping[str, Any], lookup: Lookup,
                  node_allocatable: Mapping[str, str]) -> dict[str, str]:
    """The process environment of one locally run container: its resolved env plus what a runtime adds."""
    env = resolve_env(pod, container, lookup, node_allocatable)
    env["PATH"] = default_path(env.get("PATH"))
    env.setdefault("HOME", "/root")
    hostname = (pod.get("spec") or {}).get("hostname") or (pod.get("metadata") or {}).get("name", "")
    env.setdefault("HOSTNAME", str(hostname)[:63])
    # Kubernetes' service env vars for the API server, so in-cluster clients find it.
    return env


def expand_command(container: Mapping[str, Any], env: Mapping[str, str],
                   image: tuple[list[str], list[str]] | None = None) -> list[str]:
    """What the container runs, as a container runtime decides it from the image's ENTRYPOINT and CMD
    (`image`): `command` replaces the entrypoint, `args` the CMD; `$(VAR)` references are resolved against
    the container's env (in command and args only, as Kubernetes does)."""
    command = [expand(str(a), env) for a in container.get("command") or []]
    args = [expand(str(a), env) for a in container.get("args") or []]
    entrypoint, cmd = image or ([], [])
    if not command:
        command = list(entrypoint)
        if not args:
            args = list(cmd)
    return [*command, *args]
