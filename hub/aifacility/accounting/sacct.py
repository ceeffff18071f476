"""Usage records from SLURM's own accounting (`sacct`), for jobs the interLink plugin offloaded to an HPC site.

Read the way Open XDMoD's shredder reads SLURM: `sacct --allusers --allocations --parsable2` over a time window,
with `TZ=UTC` so every time is unambiguous, and the allocated TRES (`AllocTRES`: cpu, mem, gres/gpu[:type]) as
the quantity held from `Start` to `End`. The site's accounting knows when a job really ran (not when its pod was
created) and what it was given.

Only the facility's jobs are read: the plugin marks each with `--comment=aifacility,user=<u>,group=<g>,pod=<uid>`
(a flag the site locks, so a job cannot charge someone else), and slurmdbd keeps it (`AccountingStoreFlags=
job_comment`). Ids are `slurm:<cluster>:<job id>/<resource>`; a running job gives an open record that a later
sweep closes. Windows and watermark as every site collector's (site.py): slurmdbd learns of a job's end a moment
after slurmctld, hence the margin.

The facility's `accounting.batch_accounted_sites` names the sites read this way, so that the pod collector leaves
their pods alone and no job is counted twice.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from pydantic import ValidationError

from aifacility.accounting.ledger import Ledger
from aifacility.accounting.record import UsageRecord
from aifacility.accounting.site import SiteCollector, SiteError

PREFIX = "slurm:"
COMMENT_TAG = "aifacility"
FIELDS = ("JobIDRaw", "Cluster", "Comment", "State", "Start", "End", "AllocTRES")
_MEM_UNITS = {"K": 2**-20, "M": 2**-10, "G": 1.0, "T": 2**10, "P": 2**20}
_GPU = re.compile(r"^gres/gpu(?::(?P<model>[^=]+))?$")


class SacctError(SiteError):
    """sacct could not be run or answered an error; the message is sacct's own."""


def parse_comment(comment: str) -> dict[str, str] | None:
    """`aifacility,user=alice,group=physics,pod=<uid>` → its fields; None for a job that is not the facility's."""
    words = comment.split(",")
    if not words or words[0] != COMMENT_TAG:
        return None
    fields = dict(w.split("=", 1) for w in words[1:] if "=" in w)
    return fields if fields.get("user") else None


def _when(text: str) -> datetime | None:
    """sacct's time (ISO format, UTC); `Unknown`/`None` while the job has not started or not ended."""
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    except ValueError:
        return None


def parse_tres(text: str) -> list[tuple[str, str, float]]:
    """`billing=2,cpu=2,gres/gpu:a100=1,mem=200M,node=1` → (resource, model, quantity) in the ledger's units."""
    out: list[tuple[str, str, float]] = []
    gpus: dict[str, float] = {}
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        try:
            if name == "cpu":
                out.append(("cpu", "", float(value)))
            elif name == "mem":
                unit = value[-1:].upper()
                out.append(("memory", "", float(value[:-1]) * _MEM_UNITS[unit] if unit in _MEM_UNITS
                            else float(value) * _MEM_UNITS["M"]))
            elif (m := _GPU.match(name)) is not None:
                gpus[m.group("model") or ""] = float(value)
        except (ValueError, KeyError):
            continue  # a TRES this collector does not know how to read
    # sacct lists the untyped total beside the typed counts: take the typed ones where there are any.
    typed = {k: v for k, v in gpus.items() if k}
    for model, count in (typed or gpus).items():
        out.append(("gpu", model, count))
    return [r for r in out if r[2] > 0]


def job_records(line: str, site: str) -> list[UsageRecord]:
    """The usage records of one `sacct --parsable2` line in FIELDS order (none for a job that is not ours or has
    not started)."""
    parts = line.split("|")
    if len(parts) != len(FIELDS):
        return []
    row = dict(zip(FIELDS, parts, strict=True))
    who = parse_comment(row["Comment"])
    start = _when(row["Start"])
    if who is None or start is None:
        return []
    end = _when(row["End"])
    records = []
    for resource, model, quantity in parse_tres(row["AllocTRES"]):
        try:
            records.append(UsageRecord(
                id=f"{PREFIX}{row['Cluster']}:{row['JobIDRaw']}/{resource}", user=who["user"],
                group=who.get("group") or "unassigned", kind="offload", resource=resource,  # type: ignore[arg-type]
                model=model, quantity=quantity, start=start, end=end if end and end >= start else None, site=site))
        except ValidationError:
            continue
    return records


def run_sacct(argv_prefix: Sequence[str] = (), env: dict[str, str] | None = None,
              timeout: float = 120.0) -> Callable[[datetime, datetime], list[str]]:
    """A reader of sacct lines for a window; `argv_prefix` reaches a remote submit host (e.g. `ssh edge-node`)."""

    fmt = "%Y-%m-%dT%H:%M:%S"
    full_env = {**(env if env is not None else os.environ), "TZ": "UTC", "SLURM_TIME_FORMAT": fmt}

    def run(*argv: str) -> list[str]:
        try:
            done = subprocess.run([*argv_prefix, *argv], env=full_env, capture_output=True, text=True,
                                  timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SacctError(f"cannot run {argv[0]}: {exc}") from None
        if done.returncode != 0:
            raise SacctError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        return done.stdout.splitlines()

    def read(since: datetime, until: datetime) -> list[str]:
        lines = run("sacct", "--allusers", "--allocations", "--parsable2", "--noheader",
                    f"--format={','.join(FIELDS)}", f"--starttime={since.astimezone(UTC).strftime(fmt)}",
                    f"--endtime={until.astimezone(UTC).strftime(fmt)}")
        # slurmdbd stores a job's comment when the job ends: a running job's comes from slurmctld (squeue).
        rows = [line.split("|") for line in lines]
        if any(len(r) == len(FIELDS) and not r[2] and r[5] == "Unknown" for r in rows):
            comments = dict(line.split("|", 1) for line in run("squeue", "--noheader", "--all", "--format=%A|%k")
                            if "|" in line)
            for r in rows:
                if len(r) == len(FIELDS) and not r[2] and r[0] in comments:
                    r[2] = comments[r[0]]
        return ["|".join(r) for r in rows]

    return read


class SacctCollector(SiteCollector):
    """Reads the site's finished and running jobs into the ledger since the watermark."""

    kind = "sacct"

    def __init__(self, ledger: Ledger, site: str, read: Callable[[datetime, datetime], list[str]],
                 first_window_seconds: float = 7 * 86400) -> None:
        super().__init__(ledger, site, first_window_seconds)
        self.read = read

    def fetch(self, since: float, until: float) -> list[UsageRecord]:
        lines = self.read(datetime.fromtimestamp(since, UTC), datetime.fromtimestamp(until, UTC))
        return [r for line in lines for r in job_records(line, self.site)]
