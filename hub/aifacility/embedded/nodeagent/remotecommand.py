"""`kubectl exec` on the kubelet endpoint: the remotecommand WebSocket protocol, served as the kubelet serves it.

The API server proxies a WebSocket exec request straight to the kubelet of a node whose status declares the
feature `ExtendWebSocketsToKubelet` (`registration.py` declares it), so kubectl's own protocol reaches us:
`v5.channel.k8s.io` (kubectl 1.30 and later) or `v4.channel.k8s.io`. Every binary message starts with its
channel: 0 stdin, 1 stdout, 2 stderr, 3 error (one metav1.Status, then the connection closes), 4 resize
(`{"Width": w, "Height": h}`); in v5, `[255, n]` says the peer closed its channel n (stdin's end of input).

The command runs in the container's sandbox (`runner.Sandbox`: its mounts, environment, user and working
directory), as exec probes do. A command that is not there is reported as containerd reports it: an internal
error "executable file not found in $PATH" (kubectl exits 1), while a shell's own "not found" is its exit 127.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import struct
import termios
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from aifacility.embedded.nodeagent.runner import Sandbox, signal_tree

V5, V4 = "v5.channel.k8s.io", "v4.channel.k8s.io"
PROTOCOLS = (V5, V4)
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
LOOKUP_FD = 3
CHUNK = 32 * 1024

# Looks the command up inside the sandbox, as the runtime does before it execs: a missing or non-executable
# command is written to LOOKUP_FD (which the command itself never inherits) instead of being run.
LOOKUP = (
    'case $0 in */*) if [ ! -e "$0" ]; then echo "exec: \\"$0\\": stat $0: no such file or directory" >&3; exit 127;'
    ' elif [ -d "$0" ] || [ ! -x "$0" ]; then echo "exec: \\"$0\\": permission denied" >&3; exit 126; fi;;'
    ' *) if ! command -v -- "$0" >/dev/null 2>&1; then'
    ' echo "exec: \\"$0\\": executable file not found in \\$PATH" >&3; exit 127; fi;; esac; exec "$0" "$@" 3>&-'
)


class ExecError(Exception):
    """A request the kubelet refuses before upgrading (HTTP status and message)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _flag(query: Mapping[str, str], name: str) -> bool:
    return query.get(name, "").lower() in ("1", "true")


@dataclass(frozen=True)
class ExecOptions:
    command: list[str]
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool

    @classmethod
    def parse(cls, query: Any) -> ExecOptions:
        """The kubelet's parameters as the API server sends them (`input`, `output`, `error`, `tty`, and
        `command` repeated), checked as the kubelet's remotecommand server checks them."""
        opts = cls(command=list(query.getall("command", [])), stdin=_flag(query, "input"),
                   stdout=_flag(query, "output"), stderr=_flag(query, "error"), tty=_flag(query, "tty"))
        if not opts.command:
            raise ExecError(400, "you must specify at least one command for the container")
        if not (opts.stdin or opts.stdout or opts.stderr):
            raise ExecError(400, "you must specify at least 1 of stdin, stdout, stderr")
        return opts


def status_success() -> dict[str, Any]:
    return {"metadata": {}, "status": "Success"}


def status_exit_code(code: int) -> dict[str, Any]:
    """What the kubelet writes for a command that exited non-zero (kubectl exits with `code`)."""
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: command terminated with exit code {code}",
            "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


def status_internal(message: str) -> dict[str, Any]:
    return {"metadata": {}, "status": "Failure", "message": f"Internal error occurred: {message}",
            "reason": "InternalError", "details": {"causes": [{"message": message}]}, "code": 500}


class _Process:
    """The exec'd command: pipes, or one pseudo-terminal for stdin, stdout and stderr together (tty)."""

    def __init__(self, proc: asyncio.subprocess.Process, master: int | None) -> None:
        self.proc, self.master = proc, master

    @classmethod
    async def start(cls, sandbox: Sandbox, opts: ExecOptions, lookup_w: int) -> _Process:
        argv = sandbox.argv(["sh", "-c", LOOKUP, *opts.command], session=not opts.tty)
        master, slave = os.openpty() if opts.tty else (None, None)

        def child() -> None:  # in the child, before exec (every other descriptor of ours is close-on-exec)
            if lookup_w == LOOKUP_FD:
                os.set_inheritable(LOOKUP_FD, True)
            else:
                os.dup2(lookup_w, LOOKUP_FD)
            os.setsid()
            if slave is not None:  # the terminal becomes the session's, so ^C reaches the command
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        pipe, null = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=slave if slave is not None else pipe if opts.stdin else null,
                stdout=slave if slave is not None else pipe if opts.stdout else null,
                stderr=slave if slave is not None else pipe if opts.stderr else null,
                env=sandbox.env, close_fds=False, preexec_fn=child)
        except BaseException:
            if master is not None:
                os.close(master)
            raise
        finally:
            if slave is not None:
                os.close(slave)
        if master is not None:
            os.set_blocking(master, False)
        return cls(proc, master)

    async def write_stdin(self, data: bytes) -> None:
        if self.master is not None:
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(self.master, view):]
                except BlockingIOError:
                    await asyncio.sleep(0.01)
            return
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.write(data)
            await self.proc.stdin.drain()

    def close_stdin(self) -> None:
        if self.master is not None:
            with contextlib.suppress(OSError):
                os.write(self.master, b"\x04")  # end of input, as a terminal's ^D
        elif self.proc.stdin is not None:
            self.proc.stdin.close()

    def resize(self, width: int, height: int) -> None:
        if self.master is not None:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    async def read_terminal(self, send: Callable[[int, bytes], Any]) -> None:
        """Copy the terminal's output to stdout until the command and everything holding the terminal are gone."""
        assert self.master is not None
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        loop.add_reader(self.master, readable.set)
        try:
            while True:
                await readable.wait()
                readable.clear()
                try:
                    data = os.read(self.master, CHUNK)
                except BlockingIOError:
                    continue
                except OSError:  # EIO: the last holder of the terminal's other end closed it
                    return
                if not data:
                    return
                await send(STDOUT, data)
        finally:
            loop.remove_reader(self.master)

    def close(self) -> None:
        if self.master is not None:
            with contextlib.suppress(OSError):
                os.close(self.master)
            self.master = None


async def _copy(reader: asyncio.StreamReader, channel: int, send: Callable[[int, bytes], Any]) -> None:
    while data := await reader.read(CHUNK):
        await send(channel, data)


async def serve_exec(request: web.Request, sandbox: Sandbox, opts: ExecOptions) -> web.WebSocketResponse:
    """Upgrade, run the command, stream its I/O, write its status on the error channel and close."""
    ws = web.WebSocketResponse(protocols=PROTOCOLS, autoping=True, heartbeat=None, max_msg_size=0)
    await ws.prepare(request)
    if ws.ws_protocol not in PROTOCOLS:
        await ws.close(message=f"unsupported protocol: expected one of {', '.join(PROTOCOLS)}".encode())
        return ws
    v5 = ws.ws_protocol == V5
    send_lock = asyncio.Lock()

    async def send(channel: int, data: bytes) -> None:
        async with send_lock:
            await ws.send_bytes(bytes([channel]) + data)

    # The first (empty) message on the lowest channel the client reads tells it that the streams are ready.
    await send(STDOUT if opts.stdout else STDERR if opts.stderr and not opts.tty else ERROR, b"")
    lookup_r, lookup_w = os.pipe()
    try:
        process = await _Process.start(sandbox, opts, lookup_w)
    except OSError as e:
        os.close(lookup_r)
        os.close(lookup_w)
        await send(ERROR, json.dumps(status_internal(f"error executing command in container: {e}")).encode())
        await ws.close()
        return ws
    os.close(lookup_w)
    proc = process.proc

    async def from_client() -> None:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            data: bytes = msg.data
            channel, payload = data[0], data[1:]
            if channel == STDIN and opts.stdin:
                with contextlib.suppress(ConnectionError):
                    await process.write_stdin(payload)
            elif channel == RESIZE:
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    size = json.loads(payload)
                    process.resize(int(size["Width"]), int(size["Height"]))
            elif channel == CLOSE and v5 and payload[:1] == bytes([STDIN]):
                process.close_stdin()

    client = asyncio.create_task(from_client())
    copies = []
    if process.master is not None:
        copies.append(asyncio.create_task(process.read_terminal(send)))
    else:
        if proc.stdout is not None:
            copies.append(asyncio.create_task(_copy(proc.stdout, STDOUT, send)))
        if proc.stderr is not None:
            copies.append(asyncio.create_task(_copy(proc.stderr, STDERR, send)))
    exited = asyncio.create_task(proc.wait())
    try:
        await asyncio.wait({client, exited}, return_when=asyncio.FIRST_COMPLETED)
        if not exited.done():  # the client went away: the command goes with it
            signal_tree(proc.pid, signal.SIGKILL)
        code = await exited
        # The command's output ends with it (a pid namespace of its own); bounded, in case a leftover holds it.
        if copies:
            await asyncio.wait(copies, timeout=5)
        lookup = _read_written(lookup_r)
        code = 128 - code if code < 0 else code
        if lookup:
            status = status_internal("error executing command in container: failed to exec in container: "
                                     + lookup.strip())
        else:
            status = status_success() if code == 0 else status_exit_code(code)
        if not ws.closed:
            with contextlib.suppress(ConnectionError):
                await send(ERROR, json.dumps(status).encode())
                await ws.close()
    finally:
        for task in (client, exited, *copies):
            task.cancel()
        process.close()
        os.close(lookup_r)
        if proc.returncode is None:
            signal_tree(proc.pid, signal.SIGKILL)
    return ws


def _read_written(fd: int) -> str:
    """What the lookup wrote (all of it before the command exited; never waits for more)."""
    os.set_blocking(fd, False)
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")
