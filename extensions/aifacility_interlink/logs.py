"""Container logs with kubectl's options. Each stored line is "<epoch seconds> <text>" (see runner.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from .contract import LogOpts

FOLLOW_POLL_SECONDS = 0.25


def _split(line: str) -> tuple[float, str]:
    stamp, _, text = line.partition(" ")
    try:
        return float(stamp), text
    except ValueError:  # a line not written by the runner: keep it, undated
        return 0.0, line


def _since(opts: LogOpts, now: float) -> float | None:
    if opts.SinceSeconds:
        return now - opts.SinceSeconds
    if opts.SinceTime is not None:
        t = opts.SinceTime if opts.SinceTime.tzinfo else opts.SinceTime.replace(tzinfo=UTC)
        return t.timestamp()
    return None


def _format(ts: float, text: str, timestamps: bool) -> str:
    if not timestamps:
        return text + "\n"
    iso = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{iso} {text}\n"


def render(raw: str, opts: LogOpts, now: float) -> str:
    """Apply Since*, Tail, Timestamps and Bytes (in kubectl's order) to the stored log text."""
    lines = [_split(line) for line in raw.splitlines()]
    since = _since(opts, now)
    if since is not None:
        lines = [(t, x) for t, x in lines if t >= since]
    if opts.Tail:
        lines = lines[-opts.Tail :]
    out = "".join(_format(t, x, opts.Timestamps) for t, x in lines)
    if opts.Bytes:
        out = out.encode()[: opts.Bytes].decode(errors="ignore")
    return out


def read(path: Path, opts: LogOpts, now: float) -> str:
    try:
        raw = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return render(raw, opts, now)


def _new_bytes(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        return b""


def _finished(done_marker: Path, job_dir: Path) -> bool:
    return done_marker.exists() or not job_dir.exists()


async def follow(path: Path, done_marker: Path, opts: LogOpts, now: float,
                 job_dir: Path) -> AsyncIterator[bytes]:
    """What `read` gives, then new lines as they come, until the container's exit status appears."""
    raw = _new_bytes(path, 0)
    offset = len(raw)
    cut = raw.rfind(b"\n") + 1  # a partial last line is sent once complete
    first = render(raw[:cut].decode(errors="replace"), opts, now).encode()
    pending = raw[cut:]
    sent = len(first)
    yield first
    if opts.Bytes and sent >= opts.Bytes:
        return
    while True:
        finished = _finished(done_marker, job_dir)
        chunk = _new_bytes(path, offset)
        if chunk:
            offset += len(chunk)
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw_line in complete:
                t, text = _split(raw_line.decode(errors="replace"))
                piece = _format(t, text, opts.Timestamps).encode()
                if opts.Bytes and sent + len(piece) > opts.Bytes:
                    yield piece[: opts.Bytes - sent]
                    return
                sent += len(piece)
                yield piece
        elif finished:
            return
        await asyncio.sleep(FOLLOW_POLL_SECONDS)
