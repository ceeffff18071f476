"""A real, single-node SLURM (slurmctld + slurmd + munged) on localhost, for tests and the demo.

Everything lives under one work dir: a generated munge key, slurm.conf, cgroup.conf, gres.conf, spool/state
dirs, logs and pid files. It runs as root. With ``accounting=True`` it also runs SLURM's accounting as a site
does (slurmdbd on a MariaDB server of its own, both on loopback), so ``sacct`` answers as on a cluster.
Where the machine has the cgroup v1 memory and freezer controllers (this project's build machines do), jobs run
in cgroups as on a production cluster (``proctrack/cgroup``, ``task/cgroup`` with ``ConstrainRAMSpace``): a job
over its ``--mem`` is OOM-killed and ends OUT_OF_MEMORY. Elsewhere (cgroup v2 needs slurmd under systemd) memory
is enforced by polling (``jobacct_gather/linux`` with ``OverMemoryKill``): the job is killed and ends FAILED.
Clients find the cluster through the ``SLURM_CONF`` environment variable, see :meth:`LocalSlurm.env`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path
from types import TracebackType

SBIN = Path("/usr/sbin")
SLURMDBD = SBIN / "slurmdbd"
MARIADBD = SBIN / "mariadbd"
MARIADB_INSTALL_DB = Path("/usr/bin/mariadb-install-db")
CGROUP_V1 = Path("/sys/fs/cgroup")


def cgroup_v1_available() -> bool:
    """Whether slurmd can put jobs in cgroup v1 memory and freezer hierarchies here."""
    return all((CGROUP_V1 / c / "tasks").exists() for c in ("memory", "freezer"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalSlurmError(RuntimeError):
    """The local SLURM could not be started; the message names the log to read."""


class LocalSlurm:
    """Start/stop a project-owned SLURM cluster of one node.

    ``cpus``/``memory_mb`` are what the node advertises (``SlurmdParameters=config_overrides`` lets a small
    machine run many concurrent test jobs); ``gpus`` fake GPUs are declared through ``gres.conf`` ``Count=``.
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        cpus: int = 64,
        memory_mb: int = 64000,
        gpus: int = 4,
        partition: str = "debug",
        min_job_age: int = 300,
        cgroups: bool | None = None,
        accounting: bool = False,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.cpus = cpus
        self.memory_mb = memory_mb
        self.gpus = gpus
        self.partition = partition
        self.min_job_age = min_job_age
        # None: where the machine allows (see cgroup_v1_available).
        self.cgroups = cgroup_v1_available() if cgroups is None else cgroups
        self.nodename = socket.gethostname().split(".")[0]
        self.accounting = accounting
        self.cluster = "aifacility"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # ---- paths -------------------------------------------------------------------------------------
    @property
    def conf(self) -> Path:
        return self.workdir / "etc" / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.workdir / "munge" / "munge.socket"

    def env(self) -> dict[str, str]:
        """Environment for SLURM client commands (sbatch, squeue, …) talking to this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    # ---- configuration -----------------------------------------------------------------------------
    def _write_config(self) -> None:
        for sub in ("etc", "munge", "state", "spool", "log", "run"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        # munged refuses group/world-writable dirs around its socket and key.
        (self.workdir / "munge").chmod(0o700)
        key = self.workdir / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        ctl_port, d_port = _free_port(), _free_port()
        w = self.workdir
        if self.accounting:
            self._dbd_port, self._db_port = _free_port(), _free_port()
            self._db_password = secrets.token_hex(16)
            dbd = self.workdir / "etc" / "slurmdbd.conf"
            dbd.write_text("\n".join([
                "AuthType=auth/munge", f"AuthInfo=socket={self.munge_socket}", "DbdHost=localhost",
                "DbdAddr=127.0.0.1", f"DbdPort={self._dbd_port}", "SlurmUser=root", f"LogFile={w}/log/slurmdbd.log",
                f"PidFile={w}/run/slurmdbd.pid", "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1",
                f"StoragePort={self._db_port}", "StorageUser=slurm", f"StoragePass={self._db_password}",
                "StorageLoc=slurm_acct_db", "DebugLevel=info",
            ]) + "\n")
            dbd.chmod(0o600)  # slurmdbd refuses a readable file: it holds the database password
            storage = ["AccountingStorageType=accounting_storage/slurmdbd", "AccountingStorageHost=127.0.0.1",
                       f"AccountingStoragePort={self._dbd_port}", "AccountingStoreFlags=job_comment",
                       "AccountingStorageTRES=gres/gpu",
                       # For slurmdbd this "password" is the munge socket its connections authenticate with.
                       f"AccountingStoragePass={self.munge_socket}"]
        else:
            storage = ["AccountingStorageType=accounting_storage/none"]
        gres = f" Gres=gpu:{self.gpus}" if self.gpus else ""
        lines = [
            f"ClusterName={self.cluster}",
            f"SlurmctldHost={self.nodename}(127.0.0.1)",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"SlurmctldPort={ctl_port}",
            f"SlurmdPort={d_port}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={w}/state",
            f"SlurmdSpoolDir={w}/spool/%n",
            f"SlurmctldPidFile={w}/run/slurmctld.pid",
            f"SlurmdPidFile={w}/run/slurmd.pid",
            f"SlurmctldLogFile={w}/log/slurmctld.log",
            f"SlurmdLogFile={w}/log/slurmd.log",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            *self._enforcement(),
            *storage,
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={w}/log/jobcomp.txt",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "SchedulerType=sched/backfill",
            # Start jobs as soon as they are submitted (the defaults batch them up for ~3 s).
            "SchedulerParameters=batch_sched_delay=0,sched_min_interval=0",
            "MpiDefault=none",
            "MailProg=/bin/true",
            "ReturnToService=2",
            "SlurmdParameters=config_overrides",
            # Jobs that ask for no memory must not take the whole node (they would run one at a time).
            "DefMemPerCPU=100",
            f"MinJobAge={self.min_job_age}",
            # Job cgroups are named by job id alone (…/slurm/uid_0/job_<id>): two clusters on one machine (the
            # tests' and the demo's) must not number their jobs alike, or one's job end kills the other's job.
            f"FirstJobId={1 + secrets.randbelow(600) * 100_000}",
            "KillWait=2",
            "InactiveLimit=0",
            "GresTypes=gpu",
            f"NodeName={self.nodename} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb}"
            f"{gres} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.nodename} Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        gres_lines = ["AutoDetect=off"]
        if self.gpus:
            # slurmd only reports GPUs that have device files (Count= alone reports 0 and drains the node):
            # character devices like /dev/null stand in for /dev/nvidiaN, plain files where mknod is refused.
            devdir = w / "dev"
            devdir.mkdir(exist_ok=True)
            for i in range(self.gpus):
                dev = devdir / f"gpu{i}"
                if not dev.exists():
                    try:
                        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
                    except OSError:
                        dev.touch()
            gres_lines.append(
                f"NodeName={self.nodename} Name=gpu Count={self.gpus} File={devdir}/gpu[0-{self.gpus - 1}]"
            )
        (w / "etc" / "gres.conf").write_text("\n".join(gres_lines) + "\n")
        (w / "spool" / self.nodename).mkdir(parents=True, exist_ok=True)

    def _enforcement(self) -> list[str]:
        """slurm.conf lines that track a job's processes and hold it to its memory (see the module doc)."""
        if self.cgroups:
            (self.workdir / "etc" / "cgroup.conf").write_text(
                f"CgroupPlugin=cgroup/v1\nCgroupMountpoint={CGROUP_V1}\nConstrainRAMSpace=yes\n"
                "ConstrainSwapSpace=no\nConstrainCores=no\nConstrainDevices=no\n")
            return ["ProctrackType=proctrack/cgroup", "TaskPlugin=task/cgroup", "JobAcctGatherType=jobacct_gather/none"]
        return ["ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/linux",
                "JobAcctGatherFrequency=task=1", "JobAcctGatherParams=OverMemoryKill"]

    # ---- lifecycle -----------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / "log" / f"{name}.stdout", "ab")  # owned by the child from here on
        self._procs[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True
        )
        log.close()

    def _check_alive(self, name: str, logfile: str) -> None:
        proc = self._procs[name]
        if proc.poll() is not None:
            tail = ""
            path = self.workdir / "log" / logfile
            if path.exists():
                tail = "\n".join(path.read_text(errors="replace").splitlines()[-15:])
            raise LocalSlurmError(f"{name} exited with {proc.returncode}; see {path}:\n{tail}")

    def start(self, timeout: float = 60.0) -> LocalSlurm:
        """Write the configuration, start munged, slurmctld and slurmd; wait until the node is idle. A part
        that fails to start stops those already started."""
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> LocalSlurm:
        for tool in ("munged", "slurmctld", "slurmd"):
            if not (SBIN / tool).exists():
                raise LocalSlurmError(f"{SBIN / tool} is missing: install the Debian packages slurm-wlm and munge")
        self._write_config()
        w = self.workdir
        self._spawn(
            "munged",
            [
                str(SBIN / "munged"), "--foreground", "--force",
                f"--key-file={w}/munge/munge.key", f"--socket={self.munge_socket}",
                f"--pid-file={w}/run/munged.pid", f"--log-file={w}/log/munged.log",
                f"--seed-file={w}/munge/munge.seed",
            ],
        )
        self._wait(lambda: self.munge_socket.exists(), timeout, "munged", "munged.log")
        if self.accounting:
            self._start_accounting(timeout)
        self._spawn("slurmctld", [str(SBIN / "slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._wait(lambda: self._scontrol_ping(), timeout, "slurmctld", "slurmctld.log")
        self._spawn("slurmd", [str(SBIN / "slurmd"), "-D", "-N", self.nodename, "-f", str(self.conf)])
        self._wait(self._node_ready, timeout, "slurmd", "slurmd.log")
        return self

    def _start_accounting(self, timeout: float) -> None:
        """MariaDB (a data dir of its own, loopback only) and slurmdbd on it; the cluster registered."""
        for tool in (MARIADBD, MARIADB_INSTALL_DB, SLURMDBD):
            if not tool.exists():
                raise LocalSlurmError(f"{tool} is missing: install the Debian packages slurmdbd and mariadb-server")
        w = self.workdir
        data, sock = w / "mariadb", w / "run" / "mariadb.sock"
        if not (data / "mysql").exists():
            done = subprocess.run([str(MARIADB_INSTALL_DB), "--no-defaults", f"--datadir={data}", "--user=root",
                                   "--auth-root-authentication-method=socket", "--skip-test-db"],
                                  capture_output=True, text=True, timeout=120, check=False)
            if done.returncode != 0:
                raise LocalSlurmError(f"mariadb-install-db failed: {done.stderr[-2000:]}")
        self._spawn("mariadbd", [
            str(MARIADBD), "--no-defaults", f"--datadir={data}", f"--socket={sock}", "--user=root",
            "--bind-address=127.0.0.1", f"--port={self._db_port}", f"--pid-file={w}/run/mariadb.pid",
            f"--log-error={w}/log/mariadb.log", "--skip-name-resolve", "--innodb-buffer-pool-size=64M",
            "--innodb-lock-wait-timeout=900", "--performance-schema=OFF",
        ])
        sql = (f"CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '{self._db_password}'; "
               f"ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{self._db_password}'; "
               "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';")
        self._wait(lambda: subprocess.run(["mariadb", f"--socket={sock}", "-u", "root", "-e", sql],
                                          capture_output=True, timeout=30, check=False).returncode == 0,
                   timeout, "mariadbd", "mariadb.log")
        self._start_slurmdbd(timeout)
        if self.cluster not in self._run("sacctmgr", "-n", "-P", "list", "cluster", "format=cluster").stdout.split():
            added = self._run("sacctmgr", "-i", "add", "cluster", self.cluster)
            if added.returncode != 0:
                raise LocalSlurmError(f"sacctmgr add cluster failed: {added.stdout}{added.stderr}")

    def _start_slurmdbd(self, timeout: float, tries: int = 3) -> None:
        """slurmdbd on its port; another port when that one was taken meanwhile. The port was free when the
        configuration was written, but on a busy machine a client's outgoing connection can get it as its
        ephemeral port before slurmdbd binds it (slurmdbd then exits: "Address already in use")."""
        for attempt in range(tries):
            self._spawn("slurmdbd", [str(SLURMDBD), "-D"])
            try:
                self._wait(lambda: self._run("sacctmgr", "-n", "list", "cluster").returncode == 0, timeout,
                           "slurmdbd", "slurmdbd.log")
                return
            except LocalSlurmError as exc:
                if attempt == tries - 1 or "Address already in use" not in str(exc):
                    raise
            self._move_dbd_port(_free_port())

    def _move_dbd_port(self, port: int) -> None:
        """Point slurmdbd.conf and slurm.conf (slurmctld is not started yet) at another slurmdbd port."""
        old = self._dbd_port
        for path, key in ((self.workdir / "etc" / "slurmdbd.conf", "DbdPort"), (self.conf, "AccountingStoragePort")):
            path.write_text(path.read_text().replace(f"{key}={old}\n", f"{key}={port}\n"))
        self._dbd_port = port

    def _wait(self, ready: object, timeout: float, name: str, logfile: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive(name, logfile)
            if ready():  # type: ignore[operator]
                return
            time.sleep(0.2)
        raise LocalSlurmError(f"{name} not ready after {timeout:.0f} s; see {self.workdir / 'log' / logfile}")

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, env=self.env(), capture_output=True, text=True, timeout=30, check=False)

    def _scontrol_ping(self) -> bool:
        return "UP" in self._run("scontrol", "ping").stdout

    def _node_ready(self) -> bool:
        out = self._run("sinfo", "-h", "-N", "-o", "%T").stdout.strip().lower()
        return out.startswith(("idle", "mixed", "allocated"))

    def stop(self) -> None:
        """Stop slurmd, slurmctld and munged (in that order) and the jobs slurmd still runs."""
        if "slurmctld" in self._procs and self._procs["slurmctld"].poll() is None:
            self._run("scancel", "--full", "--partition", self.partition)
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
            proc = self._procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    def remove(self) -> None:
        """Stop and delete the work dir."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalSlurm:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
