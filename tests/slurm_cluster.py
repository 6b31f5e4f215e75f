"""A real single-node SLURM cluster on localhost for the integration tests.

:class:`LocalSlurm` writes a ``slurm.conf`` and a munge key into a folder, starts ``munged``,
``slurmctld`` and ``slurmd`` (Debian's ``slurm-wlm`` and ``munge``) with every socket, port,
spool, state and pid file inside that folder -- so it does not touch a system SLURM or
munge, and several can run on one machine -- and stops them by their pid files.

It needs root (slurmd starts jobs as the submitting user) and the binaries on ``PATH``;
:func:`unavailable_reason` says why a cluster cannot be started, for ``pytest.skip``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo", "scancel")
SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def unavailable_reason() -> str | None:
    """Why a local SLURM cluster cannot start here (``None`` when it can)."""
    missing = [n for n in DAEMONS if _which(n) is None]
    if missing:
        return f"SLURM/munge binaries not found: {', '.join(missing)} (Debian: apt-get install slurm-wlm munge)"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "a local SLURM cluster needs root (slurmd starts jobs as the submitting user)"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class LocalSlurm:
    """``slurmctld`` + ``slurmd`` (+ ``munged``) on 127.0.0.1 with state under ``root``.

    Use as a context manager; :meth:`stop` always runs on exit. ``env`` is the environment for
    the client commands (``SLURM_CONF`` points at the generated configuration).
    """

    def __init__(self, root: str | os.PathLike, cpus: int | None = None, partition: str = "debug"):
        self.root = Path(root)
        self.cpus = int(cpus or os.cpu_count() or 1)
        self.partition = partition
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.pid_files = {
            "slurmd": self.root / "slurmd.pid",
            "slurmctld": self.root / "slurmctld.pid",
            "munged": self.root / "munge" / "munged.pid",
        }
        self.logs = {
            "munged": self.root / "munge" / "munged.log",
            "slurmctld": self.root / "slurmctld.log",
            "slurmd": self.root / "slurmd.log",
        }
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        for key in [k for k in self.env if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")) and k != "SLURM_CONF"]:
            del self.env[key]  # a test run inside a SLURM job must not leak its job's settings

    # -- configuration ---------------------------------------------------------------------
    def _memory_mb(self) -> int:
        try:
            text = Path("/proc/meminfo").read_text()
            kb = int(re.search(r"MemTotal:\s+(\d+)", text).group(1))
            return max(256, kb // 1024 - 512)
        except (OSError, AttributeError):
            return 1024

    def write_config(self) -> None:
        """``slurm.conf`` (cons_tres, linuxproc, no task plugin, no accounting) and a munge key."""
        for sub in ("state", "spool", "munge"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o700)
        key = self.root / "munge" / "munge.key"
        subprocess.run([_which("mungekey"), "--create", f"--keyfile={key}", "--force"], check=True, capture_output=True)
        os.chmod(key, 0o600)
        ctl_port, d_port = _free_port(), _free_port()
        while d_port == ctl_port:
            d_port = _free_port()
        lines = [
            "ClusterName=neurointerp-test",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"SlurmctldPort={ctl_port}",
            f"SlurmdPort={d_port}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={self.root / 'state'}",
            f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.pid_files['slurmctld']}",
            f"SlurmdPidFile={self.pid_files['slurmd']}",
            f"SlurmctldLogFile={self.logs['slurmctld']}",
            f"SlurmdLogFile={self.logs['slurmd']}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=2,bf_interval=2",
            "DependencyParameters=kill_invalid_depend",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "ReturnToService=2",
            "SlurmdParameters=config_overrides",  # the node as configured, whatever the hardware reports
            "MinJobAge=3600",
            "SlurmdTimeout=60",
            "InactiveLimit=0",
            "KillWait=5",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self._memory_mb()} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    # -- daemons ---------------------------------------------------------------------------
    def _diagnostics(self) -> str:
        parts = []
        for name, path in self.logs.items():
            if path.exists():
                tail = path.read_text(errors="replace").strip().splitlines()[-15:]
                parts.append(f"--- {name} log ({path}):\n" + "\n".join(tail))
        return "\n".join(parts)

    def _start(self, name: str, args: list[str]) -> None:
        proc = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} did not start (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}\n{self._diagnostics()}")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pid = self.pid(name)
            if pid is not None and _alive(pid):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{name} wrote no live pid file ({self.pid_files[name]})\n{self._diagnostics()}")

    def pid(self, name: str) -> int | None:
        try:
            return int(self.pid_files[name].read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def start(self, timeout: float = 60.0) -> "LocalSlurm":
        """Write the configuration, start the three daemons and wait for the node to be idle."""
        self.write_config()
        m = self.root / "munge"
        self._start("munged", [_which("munged"), f"--socket={self.munge_socket}", f"--key-file={m / 'munge.key'}", f"--pid-file={self.pid_files['munged']}", f"--log-file={self.logs['munged']}", f"--seed-file={m / 'munged.seed'}", "--force"])
        self._start("slurmctld", [_which("slurmctld"), "-c", "-f", str(self.conf)])
        self._start("slurmd", [_which("slurmd"), "-c", "-f", str(self.conf), "-N", self.node])
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            proc = self.run(["sinfo", "-h", "-N", "-n", self.node, "-o", "%t"], check=False)
            state = proc.stdout.strip()
            if proc.returncode == 0 and state.rstrip("*") == "idle":
                return self
            time.sleep(0.5)
        raise RuntimeError(f"node {self.node} not idle after {timeout:.0f} s (state '{state}')\n{self._diagnostics()}")

    def stop(self, timeout: float = 20.0) -> None:
        """Cancel remaining jobs, then SIGTERM slurmd, slurmctld and munged by pid file (SIGKILL if needed)."""
        if self.pid("slurmctld") is not None and _alive(self.pid("slurmctld")):
            self.run(["scancel", "--full", f"--partition={self.partition}"], check=False)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                q = self.run(["squeue", "-h", "-o", "%i"], check=False)
                if q.returncode != 0 or not q.stdout.strip():
                    break
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.pid(name)
            if pid is None or not _alive(pid):
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> "LocalSlurm":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- clients ---------------------------------------------------------------------------
    def run(self, args: list[str], check: bool = True, cwd=None, env: dict | None = None) -> subprocess.CompletedProcess:
        """Run a SLURM client command against this cluster."""
        proc = subprocess.run([_which(args[0]), *args[1:]], env={**self.env, **(env or {})}, cwd=cwd, capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()}\n{self._diagnostics()}")
        return proc

    def sbatch(self, args: list[str], cwd=None, env: dict | None = None) -> str:
        """Submit with ``sbatch --parsable``; returns the job id."""
        return self.run(["sbatch", "--parsable", *args], cwd=cwd, env=env).stdout.strip().split(";")[0]

    def jobs(self, job_id: str) -> list[dict[str, str]]:
        """``scontrol show job`` records of a job (one per array task)."""
        out = self.run(["scontrol", "-o", "show", "job", job_id]).stdout
        records = []
        for line in out.strip().splitlines():
            rec = {}
            for item in line.split():
                key, _, value = item.partition("=")
                rec[key] = value
            records.append(rec)
        return records

    def wait(self, job_ids: list[str], timeout: float = 300.0) -> dict[str, list[dict[str, str]]]:
        """Wait until the jobs (and all their array tasks) have ended; returns their records."""
        done = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
        deadline = time.monotonic() + timeout
        while True:
            records = {j: self.jobs(j) for j in job_ids}
            if all(r and all(t.get("JobState") in done for t in r) for r in records.values()):
                return records
            if time.monotonic() > deadline:
                states = {j: [t.get("JobState") for t in r] for j, r in records.items()}
                raise TimeoutError(f"jobs still running after {timeout:.0f} s: {states}\n{self._diagnostics()}")
            time.sleep(0.5)
