"""Pod logs: options, and the file-based provider for local nodes.

The node agent appends each container's output to `<state_dir>/pods/<ns>/<pod>_<uid>/<container>.log`
(the previous run kept as `.log.1`). Lines may be plain text or in the CRI format the kubelet writes
(`<RFC3339Nano> stdout|stderr F|P <text>`); only CRI lines carry the times `timestamps` and `sinceSeconds` need.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

Obj = dict[str, Any]

_CRI_LINE = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z) (stdout|stderr) ([FP]) (.*)$", re.DOTALL)
FOLLOW_POLL_SECONDS = 0.2


@dataclass
class LogOptions:
    container: str
    tail_lines: int | None = None
    limit_bytes: int | None = None
    since_seconds: int | None = None
    since_time: datetime | None = None
    timestamps: bool = False
    follow: bool = False
    previous: bool = False

    def since(self) -> datetime | None:
        if self.since_time is not None:
            return self.since_time
        if self.since_seconds is not None:
            return datetime.now(UTC) - timedelta(seconds=self.since_seconds)
        return None


class LogsUnavailable(Exception):
    """A provider cannot give the logs at all. Raised before its first chunk, it becomes the API's Status answer
    (`code`: 400 for a container that has not started, 500 when the node cannot read them), as the kubelet's
    errors do; once streaming has begun, providers tell failures in the body instead."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LogProvider(Protocol):
    def stream(self, pod: Obj, container: str, opts: LogOptions) -> AsyncIterator[bytes]: ...


def log_path(state_dir: Path, pod: Obj, container: str, previous: bool = False) -> Path:
    meta = pod["metadata"]
    name = f"{container}.log.1" if previous else f"{container}.log"
    return state_dir / "pods" / meta["namespace"] / f"{meta['name']}_{meta['uid']}" / name


def container_running(pod: Obj | None, container: str) -> bool:
    """Whether more output may still come: the pod exists and the container has not terminated."""
    if pod is None or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return False
    status = pod.get("status") or {}
    for cs in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
        if cs.get("name") == container:
            return "terminated" not in (cs.get("state") or {})
    return True  # not started yet: the file will appear


class FileLogProvider:
    """Reads the files the local node agent writes."""

    def __init__(self, state_dir: Path | None, pod_getter: Callable[[str, str], Obj | None] | None) -> None:
        self.state_dir = state_dir
        self.pod_getter = pod_getter

    async def stream(self, pod: Obj, container: str, opts: LogOptions) -> AsyncIterator[bytes]:
        if self.state_dir is None:
            return
        path = log_path(self.state_dir, pod, container, opts.previous)
        _check_available(pod, container, opts, path)
        budget = opts.limit_bytes if opts.limit_bytes is not None else -1
        since = opts.since()
        lines, offset, inode = await asyncio.to_thread(_read_existing, path, opts.tail_lines)
        pending = b""
        for line in lines:
            out = _render(line, opts.timestamps, since)
            if out is None:
                continue
            out, budget, done = _spend(out, budget)
            yield out
            if done:
                return
        if not opts.follow or opts.previous:
            return
        meta = pod["metadata"]
        while True:
            chunk, offset, new_inode = await asyncio.to_thread(_read_from, path, offset)
            if inode is not None and new_inode is not None and new_inode != inode:
                return  # the container restarted: its log was rotated, this run is over
            inode = inode or new_inode
            if chunk:
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    out = _render(line + b"\n", opts.timestamps, since)
                    if out is None:
                        continue
                    out, budget, done = _spend(out, budget)
                    yield out
                    if done:
                        return
                continue
            current = self.pod_getter(meta["namespace"], meta["name"]) if self.pod_getter else None
            if current is None or current["metadata"].get("uid") != meta.get("uid"):
                break
            if not container_running(current, container):
                # One last read: the agent may have flushed the final lines just before the status changed.
                chunk, offset, _ = await asyncio.to_thread(_read_from, path, offset)
                pending += chunk
                break
            await asyncio.sleep(FOLLOW_POLL_SECONDS)
        if pending:
            out = _render(pending, opts.timestamps, since)
            if out is not None:
                yield _spend(out, budget)[0]


def _check_available(pod: Obj, container: str, opts: LogOptions, path: Path) -> None:
    """The kubelet's 400s for logs that do not exist: no previous run, or a container that never started."""
    name = pod["metadata"]["name"]
    if opts.previous:
        if not path.exists():
            raise LogsUnavailable(400, f'previous terminated container "{container}" in pod "{name}" not found')
        return
    status = pod.get("status") or {}
    statuses = (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
    cs: Obj = next((c for c in statuses if c.get("name") == container), {})
    waiting = (cs.get("state") or {}).get("waiting")
    if waiting is not None and not cs.get("restartCount") and not path.exists():
        reason = waiting.get("reason") or "ContainerCreating"
        raise LogsUnavailable(400, f'container "{container}" in pod "{name}" is waiting to start: {reason}')


def _spend(out: bytes, budget: int) -> tuple[bytes, int, bool]:
    """Cut output to the remaining `limitBytes` budget (-1: unlimited)."""
    if budget < 0:
        return out, budget, False
    out = out[:budget]
    budget -= len(out)
    return out, budget, budget <= 0


def _read_existing(path: Path, tail_lines: int | None) -> tuple[list[bytes], int, int | None]:
    try:
        with open(path, "rb") as f:
            inode = os.fstat(f.fileno()).st_ino
            if tail_lines is None:
                data = f.read()
                lines = data.splitlines(keepends=True)
            else:
                kept: deque[bytes] = deque(f, maxlen=max(tail_lines, 0)) if tail_lines > 0 else deque()
                if tail_lines <= 0:
                    f.seek(0, os.SEEK_END)
                lines = list(kept)
            offset = f.tell()
    except FileNotFoundError:
        return [], 0, None
    # An unterminated last line is still being written; follow picks it up whole.
    if lines and not lines[-1].endswith(b"\n"):
        offset -= len(lines[-1])
        lines = lines[:-1]
    return lines, offset, inode


def _read_from(path: Path, offset: int) -> tuple[bytes, int, int | None]:
    try:
        with open(path, "rb") as f:
            inode = os.fstat(f.fileno()).st_ino
            f.seek(offset)
            data = f.read(1 << 20)
            return data, offset + len(data), inode
    except FileNotFoundError:
        return b"", offset, None


def _render(line: bytes, timestamps: bool, since: datetime | None) -> bytes | None:
    """A stored line as the API shows it: CRI lines lose their prefix (or keep only the time)."""
    m = _CRI_LINE.match(line)
    if m is None:
        return line
    stamp, _stream, _tag, text = m.groups()
    if since is not None and _parse_time(stamp.decode()) < since:
        return None
    return stamp + b" " + text if timestamps else text


def _parse_time(stamp: str) -> datetime:
    base, _, frac = stamp.rstrip("Z").partition(".")
    parsed = datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    if frac:
        parsed += timedelta(microseconds=int((frac + "000000")[:6]))
    return parsed
