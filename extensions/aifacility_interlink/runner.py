"""The batch-side runner script (bash) shared by the SLURM and HTCondor backends.

It runs init containers in order (stopping at the first failure), then all containers in parallel, each
supervised with its probes and hooks (see `probes.py`), and exits with the highest exit code. Per container it
writes, under ``<job dir>/ctn/``: ``<kind>-<name>.out`` (each line prefixed by the epoch time, so logs can
honour SinceSeconds/Timestamps), ``<kind>-<name>.started`` (start time) and ``<kind>-<name>.status``
("<exit code> <finishedAt> [<why it was killed>]", written atomically) — the plugin reads these when the batch
system has forgotten the job.
"""

from __future__ import annotations

import functools
import re
import shlex
from pathlib import Path

from . import probes
from .config import PluginConfig
from .contract import Container, RetrievedPodData
from .volumes import Bind, PodError, VolumePlanner

GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu")
_NAME = re.compile(r"^[a-zA-Z0-9][-a-zA-Z0-9_.]{0,252}$")

_PRELUDE = r"""
set -u
stamp() { while IFS= read -r line || [[ -n $line ]]; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done; }
now() { TZ=UTC printf '%(%Y-%m-%dT%H:%M:%SZ)T' -1; }
run_ctn() {  # kind name function
  local f="$CTN/$1-$2" rc
  now > "$f.started"
  "$3" < /dev/null 2>&1 | stamp >> "$f.out"
  rc=${PIPESTATUS[0]}
  printf '%s %s\n' "$rc" "$(now)" > "$f.status.tmp" && mv "$f.status.tmp" "$f.status"
  return "$rc"
}
# bubblewrap: an empty root with the host's top-level entries bound read-only, descending into the dirs
# that hold a mount path so the volume can be bound there without touching the host.
bw_mirror() {
  local dir=$1 e m hit; shift
  for e in "${dir%/}"/*; do
    case "$e" in /proc|/dev|/tmp) continue ;; esac
    hit=
    for m in "$@"; do
      if [[ $m == "$e" ]]; then hit=skip; break; fi
      if [[ $m == "$e"/* ]]; then hit=descend; fi
    done
    [[ $hit == skip ]] && continue
    if [[ -L $e ]]; then BW+=(--symlink "$(readlink "$e")" "$e")
    elif [[ $hit == descend && -d $e ]]; then BW+=(--dir "$e"); bw_mirror "$e" "$@"
    elif [[ -r $e ]]; then BW+=(--ro-bind "$e" "$e"); fi
  done
}
# Mount paths are mirrored (and bound) as the host resolves them: /var/run/secrets/... (a pod's service-account
# token) is /run/secrets/... where /var/run is a symlink, and /run must then be a dir of the sandbox's own.
bw_root() {
  local m real=()
  for m in "$@"; do real+=("$(realpath -m -- "$m")"); done
  BW=(--die-with-parent --tmpfs / --proc /proc --dev /dev --tmpfs /tmp); bw_mirror / ${real[@]+"${real[@]}"}
}
shopt -s dotglob nullglob
# TERM (a deleted pod: the plugin signals the runner alone) goes to this process group: init containers, and each
# container's supervisor, which runs its preStop hook and stops it (containers run in groups of their own).
on_term() { trap '' TERM INT; kill -TERM 0 2>/dev/null; wait; exit 143; }
trap on_term TERM INT
"""


def _q(value: str | Path) -> str:
    return shlex.quote(str(value))


def _argv(c: Container, runtime: str) -> list[str]:
    argv = [*(c.command or []), *(c.args or [])]
    if not c.command and runtime in ("bwrap", "none"):
        raise PodError(
            f"container {c.name!r} has no command: the {runtime!r} runtime ignores images, so it cannot run "
            "the image's entrypoint; set command"
        )
    return argv


class ScriptBuilder:
    def __init__(self, cfg: PluginConfig) -> None:
        self.cfg = cfg

    def _image(self, image: str) -> str:
        if not image:
            raise PodError("a container without an image cannot run under apptainer/singularity")
        if image.startswith("/") or "://" in image:
            return image
        return f"{self.cfg.image_prefix}{image}"

    def _env_file(self, job_dir: Path, kind: str, c: Container) -> Path:
        path = job_dir / "ctn" / f"{kind}-{c.name}.env"
        lines = []
        for e in c.env or []:
            if not e.name.replace("_", "a").isalnum() or e.name[0].isdigit():
                raise PodError(f"container {c.name!r}: env name {e.name!r} is not a valid variable name")
            lines.append(f"export {e.name}={_q(e.value or '')}\n")
        path.write_text("".join(lines))
        return path

    def _command(self, job_dir: Path, kind: str, c: Container, binds: list[Bind], gpus: bool,
                 argv: list[str] | None = None) -> str:
        """The shell command that runs the container (or, given `argv`, an exec probe or hook in its sandbox)."""
        env_file = self._env_file(job_dir, kind, c)
        exec_in = argv is not None
        argv = argv if argv is not None else _argv(c, self.cfg.runtime)
        rt = self.cfg.runtime
        if rt in ("apptainer", "singularity"):
            exe = self.cfg.runtime_binary or rt
            parts = [exe, "exec" if c.command or exec_in else "run", *self.cfg.runtime_options]
            if gpus:
                parts.append("--nv")
            parts += ["--env-file", str(env_file)]
            if c.workingDir:
                parts += ["--pwd", c.workingDir]
            for b in binds:
                parts += ["--bind", f"{b.source}:{b.target}{':ro' if b.read_only else ''}"]
            parts.append(self._image(c.image))
            parts += argv
            return " ".join(_q(p) for p in parts)
        inner = f". {_q(env_file)} && exec " + " ".join(_q(a) for a in argv)
        if c.workingDir:
            inner = f"cd {_q(c.workingDir)} && {inner}"
        if rt == "none":
            return f"bash -c {_q(inner)}"
        # bwrap: the env file must be readable inside the sandbox, so it is bound at a fixed path.
        targets = " ".join(_q(b.target) for b in binds)
        bwrap = [self.cfg.runtime_binary or "bwrap", '"${BW[@]}"']
        for b in binds:
            # The target as the host resolves it (bwrap would follow an absolute symlink on the way, such as
            # /var/run -> /run, outside the new root).
            bwrap += ["--ro-bind" if b.read_only else "--bind", _q(b.source), f'"$(realpath -m -- {_q(b.target)})"']
        if probes.has_exec(c):  # an exec probe or hook sees the container's /tmp (see probes.py)
            bwrap += ["--bind", _q(job_dir / "ctn" / f"{kind}-{c.name}.tmp"), "/tmp"]
        bwrap += ["--ro-bind", _q(env_file), "/.aifacility-env", "--"]
        inner = inner.replace(_q(env_file), "/.aifacility-env")
        return f"bw_root {targets}; " + " ".join(bwrap) + f" bash -c {_q(inner)}"

    def body(self, data: RetrievedPodData, job_dir: Path, gpus: bool) -> str:
        """The runner script; writes volume files into the job dir as a side effect."""
        spec = data.pod.spec
        assert spec is not None
        (job_dir / "ctn").mkdir(parents=True, exist_ok=True)
        planner = VolumePlanner(data, job_dir, self.cfg.host_path_prefixes)
        meta = data.pod.metadata
        out = [
            f"# aifacility-interlink runner for pod {meta.namespace}/{meta.name} ({meta.uid})",
            _PRELUDE.strip("\n"),
            probes.SUPERVISOR.strip("\n"),
            f"CTN={_q(job_dir / 'ctn')}",
            "# a requeued job starts afresh: earlier exit statuses would report it finished",
            'rm -f -- "$CTN"/*.status "$CTN"/*.started "$CTN"/*.restarts "$CTN"/*.last',
        ]
        names: set[str] = set()
        groups = [("init", spec.initContainers or []), ("run", spec.containers)]
        for kind, ctns in groups:
            for i, c in enumerate(ctns):
                if not _NAME.match(c.name):
                    raise PodError(f"container name {c.name!r} is not a valid Kubernetes name")
                if c.name in names:
                    raise PodError(f"container name {c.name!r} is used twice")
                names.add(c.name)
                binds = planner.binds(c)
                cmd = self._command(job_dir, kind, c, binds, gpus)
                out.append(f"ctn_{kind}_{i}() {{ {cmd}; }}")
                if kind == "run":
                    if probes.has_exec(c):
                        (job_dir / "ctn" / f"{kind}-{c.name}.tmp").mkdir(exist_ok=True)
                    out += probes.render(kind, i, c, functools.partial(self._command, job_dir, kind, c, binds, gpus))
        for i, c in enumerate(spec.initContainers or []):
            # in the background and waited for, so that a TERM is handled at once, not after the init container
            out.append(f"run_ctn init {_q(c.name)} ctn_init_{i} & wait $! || exit $?")
        out.append("pids=()")
        # The kubelet restarts a container its probes or hooks killed unless restartPolicy is Never.
        restart = "no" if spec.restartPolicy == "Never" else "yes"
        grace = 30 if spec.terminationGracePeriodSeconds is None else spec.terminationGracePeriodSeconds
        for i, c in enumerate(spec.containers):
            out.append(f"supervise run {_q(c.name)} {i} {restart} {grace} & pids+=($!)")
        out.append('max=0; for p in "${pids[@]}"; do wait "$p"; rc=$?; (( rc > max )) && max=$rc; done')
        out.append("exit $max")
        return "\n".join(out) + "\n"
