"""Plugin configuration: command-line options plus an optional YAML file (site flavors, resource mappings)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

Runtime = Literal["apptainer", "singularity", "bwrap", "none"]
BackendName = Literal["slurm", "htcondor"]
MIN_TOKEN_LENGTH = 16


class ConfigError(ValueError):
    """The configuration file is unreadable or invalid; the message says where."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Flavor(Strict):
    """A site flavor: `#SBATCH` flags applied first (the pod's annotation and limits override them)."""

    name: str
    flags: list[str] = Field(default_factory=list)
    default: bool = False


class SlurmSettings(Strict):
    partition: str | None = None
    # Prepended to every SLURM command (e.g. ["ssh", "login-node"], or a counting shim in the benchmark).
    command_prefix: list[str] = Field(default_factory=list)
    flavors: list[Flavor] = Field(default_factory=list)
    # Kubernetes extended resource → gres name; the count becomes `--gres=<name>:<count>`.
    gres: dict[str, str] = Field(default_factory=lambda: {"nvidia.com/gpu": "gpu"})
    command_timeout: float = Field(default=30.0, gt=0)
    # sbatch options a pod's `slurm-job.vk.io/flags` annotation may not set (the plugin's defaults for
    # --job-name, --output and --chdir otherwise yield to it). Locked by default: who the job runs as, where
    # SLURM itself opens files for it, and the comment that tells the facility's accounting whose job it is.
    locked_flags: list[str] = Field(default_factory=lambda: ["--uid", "--gid", "--output", "--error", "--input",
                                                             "--chdir", "--comment"])


class HTCondorSettings(Strict):
    schedd_name: str | None = None
    collector: str | None = None
    # Kubernetes extended resource → HTCondor custom machine resource (`request_<name>`).
    custom_resources: dict[str, str] = Field(default_factory=dict)
    default_wall_seconds: int = Field(default=86400, ge=60)
    extra_submit: dict[str, str] = Field(default_factory=dict)


class PingSettings(Strict):
    """What the virtual node is told. Totals, never a bare 0 (interLink issue 558 drains a node at 0)."""

    pods: str = "1000"
    cpu_floor: int = Field(default=1, ge=1)
    memory_floor_mib: int = Field(default=1024, ge=1)
    taints: list[dict[str, str]] = Field(default_factory=list)
    refresh_seconds: float = Field(default=30.0, gt=0)


class PluginConfig(Strict):
    backend: BackendName = "slurm"
    data_root: Path = Path("/var/lib/aifacility-interlink")
    runtime: Runtime = "apptainer"
    runtime_binary: str | None = None
    runtime_options: list[str] = Field(default_factory=list)
    image_prefix: str = "docker://"
    # hostPath volumes are refused unless under one of these prefixes (e.g. /cvmfs, /shared/datasets):
    # a tenant must not bind arbitrary host paths into a job.
    host_path_prefixes: list[str] = Field(default_factory=list)
    # The shared bearer token of the virtual kubelet (interLink's own plugin link has none: there, listen on a
    # unix socket instead). Prefer token_file (a 0600 file, or a mounted Secret) to an inline token.
    token: str | None = None
    token_file: Path | None = None
    # Request bodies: larger ones are answered 413, deeper-nested ones 400. A RetrievedPodData carries the pod's
    # config maps and secrets (1 MiB each at most in Kubernetes); a /status poll carries every pod of the node.
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    max_json_depth: int = Field(default=100, ge=8)
    delete_retry_seconds: float = Field(default=5.0, gt=0)
    # How long the record of a deleted pod is kept (it refuses a late /create of the same pod) before it is pruned.
    deleted_retention_seconds: float = Field(default=7 * 86400, gt=0)
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)
    htcondor: HTCondorSettings = Field(default_factory=HTCondorSettings)
    ping: PingSettings = Field(default_factory=PingSettings)

    def bearer_token(self) -> str | None:
        """The token every request must carry, or None; ConfigError says what is wrong with a configured one."""
        if self.token is not None and self.token_file is not None:
            raise ConfigError("set token_file or token, not both")
        if self.token_file is not None:
            try:
                token = self.token_file.read_text().strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"cannot read the token file {self.token_file}: {exc}") from None
            where = f"the token file {self.token_file}"
        elif self.token is not None:
            token, where = self.token.strip(), "the configured token"
        else:
            return None
        if len(token) < MIN_TOKEN_LENGTH:
            raise ConfigError(f"{where} holds {len(token)} characters; a token needs at least {MIN_TOKEN_LENGTH} "
                              "(e.g. `openssl rand -hex 32`)")
        if any(c.isspace() or not c.isprintable() for c in token):
            raise ConfigError(f"{where} must hold one token on one line, without spaces")
        return token


def load_config(path: Path | None, **overrides: object) -> PluginConfig:
    """Read the YAML file (if any) and apply command-line overrides that are not None."""
    data: dict[str, object] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: the top level must be a mapping")
        data.update(loaded)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return PluginConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration{f' in {path}' if path else ''}:\n{exc}") from exc
