"""Run code in a user's kernel through the Jupyter server's REST and WebSocket API, as a script of theirs would
(no browser): start a kernel, send one execute_request, collect what it prints, shut the kernel down."""

from __future__ import annotations

import json
import time
import uuid

import requests
import websocket


def run_in_kernel(base_url: str, user: str, token: str, code: str, timeout: float = 120) -> str:
    """Everything the code printed (stdout and stderr); AssertionError with the traceback when it raised."""
    server = f"{base_url}/user/{user}"
    headers = {"Authorization": f"token {token}"}
    r = requests.post(f"{server}/api/kernels", headers=headers, json={"name": "python3"}, timeout=60)
    r.raise_for_status()
    kernel = r.json()["id"]
    ws_url = server.replace("http://", "ws://").replace("https://", "wss://") + f"/api/kernels/{kernel}/channels"
    ws = websocket.create_connection(ws_url, header=[f"Authorization: token {token}"], timeout=timeout)
    try:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": user, "session": uuid.uuid4().hex, "msg_type": "execute_request",
                       "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if (msg.get("parent_header") or {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind == "error":
                raise AssertionError("the code raised in the kernel:\n" + "\n".join(content["traceback"]))
            elif kind == "status" and content["execution_state"] == "idle":
                return "".join(out)
        raise AssertionError(f"no answer from the kernel within {timeout} s; printed so far: {''.join(out)!r}")
    finally:
        ws.close()
        requests.delete(f"{server}/api/kernels/{kernel}", headers=headers, timeout=30)
