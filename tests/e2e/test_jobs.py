"""Jobs from a notebook: alice's kernel runs `aifacility jobs ...` with the identity her session already has.

A job on a MIG slice runs and its logs and admitted flavor come back; a second one that does not fit waits
with its queue position and runs when the first ends; a job runs on quota another group of the cohort leaves
idle, and its status says so; a notebook job with a parameter writes its executed copy
into her home; a job offloaded to HPC runs on SLURM through the virtual node; bob can neither see, read nor
cancel her jobs; bad input is refused with a message and creates no Job.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium.webdriver.common.by import By

from aifacility.embedded.controlplane import build
from aifacility.launcher.components import accounting_db
from support.browser import screenshot
from support.facility import RunningFacility, wait_for
from support.kernel import run_in_kernel
from support.ledger import usage_records
from support.oidc_login import oidc_login
from support.spawning import spawn_and_wait, stop_and_wait
from support.ui import login, run_cell, wait

pytestmark = pytest.mark.slow

CPU = {"profile": "cpu-small", "image": "ml"}

CLI = r'''
import json, subprocess
def jobs(*args):
    p = subprocess.run(["aifacility", "jobs", *args], capture_output=True, text=True, timeout=300)
    return {"rc": p.returncode, "out": p.stdout, "err": p.stderr}
'''


def kernel(fac: RunningFacility, user: str, token: str, calls: str) -> Any:
    """Run `calls` (an expression using jobs(...)) in the user's kernel; its JSON value."""
    printed = run_in_kernel(fac.url, user, token, CLI + f"print('RESULT ' + json.dumps({calls}))", timeout=400)
    return json.loads(printed.split("RESULT ", 1)[1])


def kube_jobs(fac: RunningFacility) -> list[str]:
    out = subprocess.run([str(build.binary("kubectl")), f"--kubeconfig={fac.kubeconfig}", "get", "jobs", "-n",
                          "aifacility", "-o", "jsonpath={.items[*].metadata.name}"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return out.split()


@pytest.fixture(scope="module")
def sessions(facility: RunningFacility) -> Any:
    for user in ("alice", "bob"):
        oidc_login(facility.url, user)
        spawn_and_wait(facility.api, facility.url, user, CPU)
    tokens = {u: facility.api("POST", f"/users/{u}/tokens", json={"expires_in": 3600, "note": "jobs e2e"}).json()[
        "token"] for u in ("alice", "bob")}
    yield tokens
    for user in ("alice", "bob"):
        stop_and_wait(facility.api, user)


def test_mig_jobs_queue_run_and_report(facility: RunningFacility, sessions: dict[str, str]) -> None:
    alice = sessions["alice"]
    # The first holds all four slices for 45 s: long enough for a slow machine's status calls to see the second
    # waiting (12 s was not, in a CI-like run where each call through the kernel took seconds).
    first, second = kernel(facility, "alice", alice, """[
        jobs("submit", "--group", "ml", "--mig", "1g.10gb:4", "--time", "1", "--",
             "sh", "-c", "echo hello from $AIFACILITY_JOB_NAME; sleep 45; echo done"),
        jobs("submit", "--group", "ml", "--mig", "1g.10gb", "--", "sh", "-c", "echo second")]""")
    assert first["rc"] == 0 and second["rc"] == 0, (first, second)
    name1, name2 = first["out"].strip(), second["out"].strip()

    # The second waits for the slices the first holds: Queued, first in line, and it says why.
    deadline = time.monotonic() + 60
    while True:
        st2 = kernel(facility, "alice", alice, f'jobs("status", "--json", "{name2}")')
        model2 = json.loads(st2["out"])
        if (model2["phase"] == "Queued" and model2["position"] == 1) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert (model2["phase"], model2["position"]) == ("Queued", 1), model2
    assert "mig-1g.10gb" in (model2["waiting_for"] or ""), model2

    final = kernel(facility, "alice", alice, f"""[
        jobs("logs", "--follow", "{name1}"), jobs("status", "--json", "{name1}"),
        jobs("logs", "--follow", "{name2}"), jobs("status", "--json", "{name2}"), jobs("list")]""")
    logs1, st1, logs2, st2, listing = final
    model1 = json.loads(st1["out"])
    assert logs1["out"] == f"hello from {name1}\ndone\n", logs1
    assert (model1["phase"], model1["exit_code"], model1["site"]) == ("Succeeded", 0, "local"), model1
    assert model1["admission"]["flavors"]["nvidia.com/mig-1g.10gb"] == "mig-1g-10gb"
    assert model1["admission"]["cluster_queue"] == "ml" and model1["node"] == "gpu-a100-01"
    assert logs2["out"] == "second\n"
    model2 = json.loads(st2["out"])
    assert model2["phase"] == "Succeeded" and model2["started"] >= model1["finished"], (model1, model2)
    assert name1 in listing["out"] and name2 in listing["out"]


# What a physicist types into a notebook cell: the CLI through IPython's `!`, progress shown while it waits.
CELL = """print("JOBS")
!aifacility jobs submit --group ml --mig 1g.10gb:1 --time 1 --wait -- sh -c 'echo hello from a MIG slice' > job.txt
name = open('job.txt').read().strip()
!aifacility jobs status {name}
!aifacility jobs logs {name}
print("END", name)
"""


@pytest.mark.browser
def test_a_cell_typed_in_jupyterlab_runs_a_mig_job(facility: RunningFacility, sessions: dict[str, str],
                                                  browser: Any) -> None:
    login(browser, facility.url, "alice")
    browser.get(f"{facility.url}/user/alice/lab")
    wait(browser, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-LauncherCard"))
    out = run_cell(browser, CELL, expect="JOBS", until="END ", timeout=300)
    screenshot(browser, "jobs-notebook-cell")
    name = out.rsplit("END ", 1)[1].split()[0]
    assert name.startswith("alice-"), out
    rows = dict(line.split(":", 1) for line in out.splitlines() if ":" in line and not line.startswith(" "))
    assert rows["phase"].strip() == "Succeeded" and rows["exit code"].strip() == "0", out
    assert "nvidia.com/mig-1g.10gb=mig-1g-10gb" in rows["admitted to"] and rows["site"].strip() == "local", out
    assert "hello from a MIG slice" in out.splitlines(), out  # the logs (the command row quotes it differently)
    assert name in kube_jobs(facility)
    # JupyterLab keeps its layout in alice's home: the next session would reopen this notebook, not the launcher.
    browser.get("about:blank")
    forget = requests.delete(f"{facility.url}/user/alice/lab/api/workspaces/default", timeout=30,
                             headers={"Authorization": f"token {sessions['alice']}"})
    assert forget.status_code in (204, 404), forget.text


def test_a_job_borrows_idle_quota_of_the_cohort_and_status_says_so(facility: RunningFacility,
                                                                  sessions: dict[str, str]) -> None:
    """ml owns 2 T4s, physics 4 and idle: a second 2-T4 job of ml runs on physics's lent quota."""
    alice = sessions["alice"]
    subs = kernel(facility, "alice", alice, """[jobs("submit", "--group", "ml", "--gpu", "t4:2", "--time", "1",
        "--", "sh", "-c", "sleep 600") for _ in range(2)]""")  # cancelled below: they must outlast the checks
    assert all(s["rc"] == 0 for s in subs), subs
    names = [s["out"].strip() for s in subs]
    deadline = time.monotonic() + 120
    while True:
        st = kernel(facility, "alice", alice, f'[jobs("status", "--json", n) for n in {names!r}]')
        models = [json.loads(s["out"]) for s in st]
        if all(m["phase"] == "Running" for m in models) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert [m["phase"] for m in models] == ["Running", "Running"], models
    for m in models:  # the group as a whole is 2 T4s over its own quota
        assert m["borrowing"] == [{"flavor": "t4", "resource": "nvidia.com/gpu", "borrowed": "2"}], m
    text = kernel(facility, "alice", alice, f'jobs("status", "{names[1]}")')["out"]
    assert "group ml is using 2 nvidia.com/gpu on t4 beyond its quota, lent by idle groups" in text, text
    kernel(facility, "alice", alice, f'[jobs("cancel", n) for n in {names!r}]')


def test_notebook_job_writes_its_output_into_home(facility: RunningFacility, sessions: dict[str, str]) -> None:
    make = r'''
import nbformat, os
nb = nbformat.v4.new_notebook()
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}  # as Lab saves it
nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell("print('answer', x * 2)")]
os.makedirs(os.path.expanduser("~/ana"), exist_ok=True)
nbformat.write(nb, os.path.expanduser("~/ana/double.ipynb"))
'''
    run_in_kernel(facility.url, "alice", sessions["alice"], make)
    sub = kernel(facility, "alice", sessions["alice"],
                 'jobs("submit", "--group", "physics", "--wait", "--json", "ana/double.ipynb", "-p", "x", "21")')
    model = json.loads(sub["out"])
    assert sub["rc"] == 0, (sub, kernel(facility, "alice", sessions["alice"], f'jobs("logs", "{model["name"]}")'))
    assert model["kind"] == "notebook"
    out = run_in_kernel(facility.url, "alice", sessions["alice"], f'''
import nbformat, os
nb = nbformat.read(os.path.expanduser("~/{model["output_notebook"]}"), as_version=4)
print("".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])))
''')
    assert "answer 42" in out


def test_offloaded_job_runs_on_slurm(facility: RunningFacility, sessions: dict[str, str]) -> None:
    sub, = kernel(facility, "alice", sessions["alice"], """[jobs("submit", "--group", "physics", "--offload", "hpc",
        "--wait", "--json", "--", "sh", "-c", "sleep 3; echo partition $SLURM_JOB_PARTITION")]""")
    name = json.loads(sub["out"])["name"]
    assert sub["rc"] == 0, (sub, kernel(facility, "alice", sessions["alice"], f'jobs("logs", "{name}")'))
    logs, st = kernel(facility, "alice", sessions["alice"], f'[jobs("logs", "{name}"), jobs("status", "--json", '
                                                            f'"{name}")]')
    model = json.loads(st["out"])
    assert (model["phase"], model["node"], model["site"]) == ("Succeeded", "vk-hpc-leonardo", "hpc"), model
    assert set(model["admission"]["flavors"].values()) == {"hpc"}
    assert logs["out"].strip() == "partition debug"
    # The site's accounting (sacct, through the facility's collector) recorded it, as alice's, charged to physics,
    # at the HPC site, with the times SLURM ran it; the pod collector left it alone (counted once).
    def offloaded() -> list[Any]:
        return [r for r in usage_records(facility.state_dir).values()
                if r.user_name == "alice" and r.kind == "offload" and r.resource == "cpu" and r.end_ts is not None
                and r.start_ts >= datetime.fromisoformat(model["started"].replace("Z", "+00:00")).timestamp() - 1]

    (record,) = wait_for(offloaded, timeout=60, what="the offloaded job's usage record")
    assert (record.group_name, record.site) == ("physics", "hpc") and record.id.startswith("slurm:"), record
    assert not [r for r in usage_records(facility.state_dir).values() if r.kind == "offload" and r.site == "hpc"
                and r.id.startswith("pod:")]
    # SLURM's own run time (3 s of sleep), within seconds of the pod's as the virtual node reported it (its times
    # are those of its status polls, a few seconds late).
    seconds = record.end_ts - record.start_ts
    assert 3 <= seconds <= 5, record
    if model.get("finished"):
        ran = (datetime.fromisoformat(model["finished"].replace("Z", "+00:00"))
               - datetime.fromisoformat(model["started"].replace("Z", "+00:00"))).total_seconds()
        assert seconds - 2 <= ran <= seconds + 12, (record, model)
    # The admin's report for the day shows it at the HPC site, with an energy figure.
    day = datetime.fromtimestamp(record.start_ts, UTC).date()
    rep = subprocess.run([sys.executable, "-m", "aifacility.cli", "report", "--db",
                          accounting_db(Path(facility.state_dir)), "--from", day.isoformat(),
                          "--to", (day + timedelta(days=1)).isoformat(), "--by", "site", "--format", "json"],
                         capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr
    hpc = [r for r in json.loads(rep.stdout)["rows"] if r["site"] == "hpc" and r["resource"] == "cpu"]
    assert hpc and hpc[0]["hours"] > 0 and hpc[0]["energy_kwh"] > 0, rep.stdout
    assert record.end_ts - record.start_ts < 120


def test_bob_cannot_see_read_or_cancel_alice_s_jobs(facility: RunningFacility, sessions: dict[str, str]) -> None:
    sub = kernel(facility, "alice", sessions["alice"],
                 'jobs("submit", "--group", "physics", "--", "sleep", "60")')
    name = sub["out"].strip()
    api = f"{facility.url}/services/jobs/api/jobs"

    def as_bob(method: str, path: str = "") -> requests.Response:
        return requests.request(method, f"{api}{path}", headers={"Authorization": f"token {sessions['bob']}"},
                                timeout=30)

    assert as_bob("GET", f"/{name}").status_code == 403
    assert as_bob("GET", f"/{name}/logs").status_code == 403
    assert as_bob("DELETE", f"/{name}").status_code == 403
    assert as_bob("GET", "?user=alice").status_code == 403
    assert as_bob("GET", "?all=1").status_code == 403
    assert name not in json.dumps(as_bob("GET").json())
    assert name in kube_jobs(facility)  # still there, untouched
    # An admin sees everyone's; alice cancels her own.
    assert name in json.dumps(requests.get(f"{api}?all=1", headers={"Authorization": f"token {facility.admin_token}"},
                                           timeout=30).json())
    cancel = kernel(facility, "alice", sessions["alice"], f'jobs("cancel", "{name}")')
    assert cancel["rc"] == 0, cancel
    deadline = time.monotonic() + 30
    while name in kube_jobs(facility) and time.monotonic() < deadline:
        time.sleep(1)
    assert name not in kube_jobs(facility)


@pytest.mark.parametrize(("args", "words"), [
    (["--group", "nobody", "--", "true"], "You cannot charge jobs to group 'nobody'"),
    (["--group", "admins", "--", "true"], "You cannot charge jobs to group 'admins'"),
    (["--group", "physics", "--gpu", "rtx5000", "--", "true"], "Group 'physics' may not use"),
    (["--group", "ml", "--image", "ubuntu", "--", "true"], "is not one of the facility's images"),
    (["--group", "ml", "--time", "0", "--", "true"], "positive number of hours"),
    (["--group", "ml", "--time", "-1", "--", "true"], "positive number of hours"),
    (["--group", "ml"], "Give the command to run"),
    (["--group", "ml", "--"], "Give the command to run"),
    (["--", "true"], "choose one with --group"),
])
def test_bad_input_is_refused_and_creates_nothing(facility: RunningFacility, sessions: dict[str, str],
                                                  args: list[str], words: str) -> None:
    before = kube_jobs(facility)
    res = kernel(facility, "alice", sessions["alice"], f'jobs("submit", *{args!r})')
    assert res["rc"] == 2 and words in res["err"], res
    assert "Traceback" not in res["err"]
    assert kube_jobs(facility) == before


def test_raw_rest_bad_bodies_get_400s(facility: RunningFacility, sessions: dict[str, str]) -> None:
    api = f"{facility.url}/services/jobs/api/jobs"
    headers = {"Authorization": f"token {sessions['alice']}"}
    before = kube_jobs(facility)
    for body in (b"[1,2,3]", b"null", b'"x"', b"{", b"[" * 100000, json.dumps({"command": ["x"] * 5000}).encode(),
                 json.dumps({"command": ["true"], "group": "ml", "token": 5}).encode()):
        r = requests.post(api, data=body, headers=headers, timeout=30)
        assert r.status_code in (400, 413), (body[:40], r.status_code, r.text[:300])
        assert "message" in r.json()
    assert kube_jobs(facility) == before
