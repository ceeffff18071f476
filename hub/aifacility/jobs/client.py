"""The jobs service from Python, in a session (or anywhere with a JupyterHub token).

    from aifacility.jobs.client import JobsClient
    jobs = JobsClient()                          # the session's service address and token, from its environment
    job = jobs.submit(["python", "train.py"], mig="1g.10gb", hours=2)
    jobs.wait(job["name"])                       # -> the final model: phase, exit_code, admission, site
    print("".join(jobs.logs(job["name"])))

Every refusal of the service raises JobsError with its message (what to change); nothing is retried silently.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

FINAL = ("Succeeded", "Failed")


class JobsError(RuntimeError):
    """The service refused a request or could not be reached; the message says why."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def split_accelerator(value: str) -> tuple[str, int]:
    """'t4:2' -> ('t4', 2); 't4' -> ('t4', 1)."""
    name, _, count = value.partition(":")
    if not name or (count and (not count.isdigit() or int(count) < 1)):
        raise JobsError(f"'{value}' is not NAME or NAME:COUNT (e.g. t4:2, 1g.10gb:1)")
    return name, int(count or 1)


def home_relative(path: str, home: str | None = None) -> str:
    """A notebook path as the service wants it: relative to the home directory (which jobs mount too)."""
    home_dir = Path(home or os.environ.get("HOME", "/home/jovyan")).resolve()
    full = (Path.cwd() / path).resolve() if not os.path.isabs(path) else Path(path).resolve()
    try:
        return str(full.relative_to(home_dir))
    except ValueError:
        raise JobsError(f"{path} is not in your home directory ({home_dir}): jobs see only your home and "
                        "group directories") from None


class JobsClient:
    def __init__(self, api_url: str | None = None, token: str | None = None, *, timeout: float = 60) -> None:
        self.api_url = (api_url or os.environ.get("AIFACILITY_JOBS_API") or "").rstrip("/")
        self.token = token or os.environ.get("JUPYTERHUB_API_TOKEN") or ""
        if not self.api_url or not self.token:
            raise JobsError("This is not an aifacility session: AIFACILITY_JOBS_API and JUPYTERHUB_API_TOKEN "
                            "must be set (or pass api_url and token).")
        self.timeout = timeout
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"token {self.token}"

    def _call(self, method: str, path: str, **kw: Any) -> requests.Response:
        try:
            resp = self.http.request(method, f"{self.api_url}/{path}", timeout=kw.pop("timeout", self.timeout), **kw)
        except requests.RequestException as e:
            raise JobsError(f"The jobs service at {self.api_url} did not answer: {e}") from None
        if resp.status_code >= 400:
            try:
                message = str(resp.json().get("message") or resp.reason)
            except ValueError:
                message = f"{resp.status_code} {resp.reason}"
            raise JobsError(message, resp.status_code)
        return resp

    def submit(self, command: list[str] | None = None, *, notebook: str | None = None,
               parameters: dict[str, Any] | None = None, group: str | None = None, image: str | None = None,
               cpu: str | None = None, memory: str | None = None, gpu: str | None = None, mig: str | None = None,
               fpga: str | None = None, offload: str | None = None, hours: float | None = None,
               with_token: bool = True) -> dict[str, Any]:
        """Submit a command or a notebook (a path in the home); accelerators as NAME[:COUNT]. With `with_token`
        the session's IAM access token goes with the job (BEARER_TOKEN_FILE in the job)."""
        body: dict[str, Any] = {}
        if command is not None:
            body["command"] = list(command)
        if notebook is not None:
            body["notebook"] = home_relative(notebook)
            if parameters:
                body["parameters"] = dict(parameters)
        for key, value in (("group", group), ("image", image), ("cpu", cpu), ("memory", memory),
                           ("offload", offload), ("hours", hours)):
            if value is not None:
                body[key] = value
        asked = [(kind, v) for kind, v in (("gpu", gpu), ("mig", mig), ("fpga", fpga)) if v]
        if len(asked) > 1:
            raise JobsError("Ask for one kind of accelerator: --gpu, --mig or --fpga.")
        if asked:
            kind, value = asked[0]
            name, count = split_accelerator(value)
            body["accelerator"] = {"kind": kind, "name": name, "count": count}
        token_file = os.environ.get("AIFACILITY_TOKEN_FILE")
        if with_token and token_file and os.path.exists(token_file):
            token = Path(token_file).read_text().strip()
            if token:
                body["token"] = token
        result: dict[str, Any] = self._call("POST", "jobs", json=body).json()
        return result

    def list(self, *, everyone: bool = False) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = self._call("GET", "jobs", params={"all": "1"} if everyone else {}).json()["jobs"]
        return jobs

    def status(self, name: str) -> dict[str, Any]:
        model: dict[str, Any] = self._call("GET", f"jobs/{quote(name, safe='')}").json()
        return model

    def cancel(self, name: str) -> None:
        self._call("DELETE", f"jobs/{quote(name, safe='')}")

    def logs(self, name: str, *, follow: bool = False) -> Iterator[str]:
        resp = self._call("GET", f"jobs/{quote(name, safe='')}/logs", params={"follow": "1"} if follow else {},
                          stream=True, timeout=None if follow else self.timeout)
        with resp:
            yield from resp.iter_content(chunk_size=None, decode_unicode=True)

    def wait(self, name: str, *, timeout: float | None = None, every: float = 2.0,
             progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll until the job ends; `progress` hears each change of phase or queue position."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last: tuple[Any, ...] = ()
        while True:
            model = self.status(name)
            now = (model["phase"], model.get("position"), model.get("waiting_for"))
            if progress is not None and now != last:
                progress(model)
            last = now
            if model["phase"] in FINAL:
                return model
            if deadline is not None and time.monotonic() > deadline:
                raise JobsError(f"Job {name} is still {model['phase'].lower()} after {timeout:g} s.")
            time.sleep(every)
