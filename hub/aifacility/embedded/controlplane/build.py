"""Build the control plane once per machine: `python -m aifacility.embedded.controlplane.build`.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the Kueue controller manager are built with the
machine's Go toolchain from the modules that `gomod/go.mod` pins (one dependency graph, so the packages they
share compile once), into a cache outside the checkout. A second run finds them there and returns at once.
The version variables are set the way Kubernetes' and Kueue's own release builds set them, so that
`kubectl version` reports the real server version.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from aifacility.embedded.controlplane.versions import GOMOD_DIR, Versions, versions

# go build's output name (the last element of the main package's path) -> the name we run it under.
BINARIES = {
    "kube-apiserver": "kube-apiserver",
    "kube-controller-manager": "kube-controller-manager",
    "kube-scheduler": "kube-scheduler",
    "kueue": "kueue",
    "kubectl": "kubectl",
    "server": "etcd",  # go.etcd.io/etcd/server/v3
}
PROGRESS_SECONDS = 30.0


class BuildError(Exception):
    """The build failed; the message carries the go command's own output."""


def cache_root() -> Path:
    base = os.environ.get("AIFACILITY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "aifacility")
    return Path(base)


def ldflags(v: Versions) -> str:
    major, minor = v.kubernetes_minor
    stamp = "2026-01-01T00:00:00Z"  # fixed: the same sources give the same binaries
    kube = {"gitVersion": v.kubernetes, "gitMajor": major, "gitMinor": minor, "gitTreeState": "clean",
            "buildDate": stamp}
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.{k}={val}" for k, val in kube.items()]
    flags += [f"-X sigs.k8s.io/kueue/pkg/version.GitVersion={v.kueue}",
              f"-X sigs.k8s.io/kueue/pkg/version.BuildDate={stamp}"]
    return " ".join(flags)


def bin_dir(v: Versions | None = None) -> Path:
    """Where the binaries of this checkout's pins live (a new pin or new flags give a new directory)."""
    v = v or versions()
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        digest.update((GOMOD_DIR / name).read_bytes())
    digest.update(ldflags(v).encode())
    return cache_root() / "controlplane" / f"k8s-{v.kubernetes}-kueue-{v.kueue}-{digest.hexdigest()[:10]}" / "bin"


def binary(name: str) -> Path:
    """The path of a built binary (`etcd`, `kube-apiserver`, ...); BuildError when it was not built."""
    path = bin_dir() / name
    if not path.exists():
        raise BuildError(f"{name} is not built yet: run `make setup` (or python -m aifacility.embedded."
                         "controlplane.build)")
    return path


def is_built() -> bool:
    target = bin_dir()
    return all((target / name).exists() for name in BINARIES.values())


def go_command() -> str:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if os.path.exists("/usr/local/go/bin/go") else None)
    if go is None:
        raise BuildError("the Go toolchain is missing: install Go (golang-go, or go.dev/dl) and run again")
    return go


def _run(argv: list[str], what: str, env: dict[str, str]) -> None:
    """Run a go command, printing a progress line every PROGRESS_SECONDS (go build itself is silent)."""
    started = time.monotonic()
    compiled = 0
    output: list[str] = []
    proc = subprocess.Popen(argv, cwd=GOMOD_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    done = threading.Event()

    def progress() -> None:
        while not done.wait(PROGRESS_SECONDS):
            print(f"  ... {what}: {time.monotonic() - started:.0f} s, {compiled} packages compiled", flush=True)

    ticker = threading.Thread(target=progress, daemon=True)
    ticker.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        output.append(line)
        # -v prints each package as it is compiled; anything else is the go command talking.
        if line and not line.startswith(("go: ", "#")) and " " not in line.strip():
            compiled += 1
    code = proc.wait()
    done.set()
    if code != 0:
        errors = [line for line in output if line.strip() and " " in line.strip()] or output
        raise BuildError(f"{what} failed (exit {code}); the go command said:\n" + "".join(errors[-40:]))


def build(*, quiet: bool = False) -> Path:
    v = versions()
    target = bin_dir(v)
    if is_built():
        if not quiet:
            print(f"control plane: Kubernetes {v.kubernetes}, etcd {v.etcd}, Kueue {v.kueue} already built "
                  f"({target})", flush=True)
        return target
    go = go_command()
    env = {**os.environ, "GOFLAGS": "-mod=readonly -buildvcs=false", "CGO_ENABLED": "0"}
    print(f"control plane: building Kubernetes {v.kubernetes} (kube-apiserver, kube-controller-manager, "
          f"kube-scheduler), etcd {v.etcd} and Kueue {v.kueue} from their Go modules into {target}; "
          "a first build takes about 12 minutes on 2 cores", flush=True)
    started = time.monotonic()
    _run([go, "mod", "download"], "downloading the modules", env)
    print(f"  modules downloaded ({time.monotonic() - started:.0f} s)", flush=True)
    work = target.parent / "bin.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    _run([go, "build", "-v", "-trimpath", "-ldflags", ldflags(v), "-o", f"{work}/", "tool"], "go build", env)
    for built, name in BINARIES.items():
        if built != name:
            (work / built).rename(work / name)
        if not (work / name).exists():
            raise BuildError(f"go build did not produce {name}")
    shutil.rmtree(target, ignore_errors=True)
    work.rename(target)
    print(f"control plane: built in {time.monotonic() - started:.0f} s ({target})", flush=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aifacility.embedded.controlplane.build",
                                     description="Build the control plane's binaries once per machine.")
    parser.add_argument("--print-dir", action="store_true", help="print the binaries' directory and exit")
    args = parser.parse_args(argv)
    if args.print_dir:
        print(bin_dir())
        return 0
    try:
        build()
    except BuildError as e:
        print(f"control plane: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
