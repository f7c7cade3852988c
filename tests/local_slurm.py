"""A real one-node SLURM cluster on localhost for the tests (Debian's slurm-wlm and munge).

Written for this project after the worked example in shared/slurm: no systemd, so every daemon
is started by hand; no accounting database, so the profile's status checks use squeue (which
keeps finished jobs visible for MinJobAge seconds). State, logs and pid files live in one folder;
slurm.conf and gres.conf go to /etc/slurm, where job steps look for them (the SLURM executor plugin
clears SLURM_* variables, SLURM_CONF included, inside its jobs). Files already there are put back
by ``down()``.
Fake GPUs (character devices) let `gpu: 1` jobs schedule; they run on the CPU.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "sbatch", "squeue", "munged")


def missing_binaries() -> list[str]:
    return [
        name
        for name in PACKAGES
        if shutil.which(name) is None and not Path(f"/usr/sbin/{name}").exists()
    ]


def _binary(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class LocalSlurm:
    def __init__(self, base: Path, partition: str = "main", fake_gpus: int = 1):
        self.base, self.partition, self.fake_gpus = Path(base), partition, fake_gpus
        self.node = socket.gethostname().split(".")[0]
        self.conf = Path("/etc/slurm/slurm.conf")
        self.saved: dict[Path, bytes | None] = {}
        self.log_folder = self.base / "log"
        self.started: list[tuple[str, Path]] = []

    @property
    def env(self) -> dict:
        return {"SLURM_CONF": str(self.conf)}

    def _install(self, path: Path, text: str) -> None:
        """Write a config file, remembering what was there to put it back."""
        if path not in self.saved:
            self.saved[path] = path.read_bytes() if path.exists() else None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def _run(self, *args, check=True, **kwargs) -> subprocess.CompletedProcess:
        env = {**os.environ, **self.env}
        return subprocess.run(
            args, check=check, capture_output=True, text=True, env=env, timeout=60, **kwargs
        )

    # ------------------------------------------------------------------ munge

    def _start_munge(self) -> None:
        key = Path("/etc/munge/munge.key")
        if not key.exists() or key.stat().st_size == 0:
            subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True)
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
        run_dir = Path("/run/munge")
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.chown(run_dir, "munge", "munge")
        if subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0:
            return  # a munged is already serving (shared with whoever started it)
        for stale in run_dir.glob("munge.socket.2*"):
            stale.unlink()
        pid_file = (
            run_dir / "munged.pid"
        )  # munged runs as munge, which cannot reach the test folder
        subprocess.run(
            ["runuser", "-u", "munge", "--", _binary("munged"), f"--pid-file={pid_file}"],
            check=True,
        )
        self.started.append(("munged", pid_file))
        self._wait(
            "munged",
            lambda: (
                subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode
                == 0
            ),
        )

    # ------------------------------------------------------------------ configuration

    def _write_config(self) -> None:
        hardware = self._run(_binary("slurmd"), "-C").stdout.splitlines()[0]

        def field(name):
            return re.search(rf"{name}=(\d+)", hardware).group(1)

        meminfo = Path("/proc/meminfo").read_text().splitlines()
        available_kb = int(
            next(line.split()[1] for line in meminfo if line.startswith("MemAvailable"))
        )
        memory = min(int(field("RealMemory")), available_kb // 1024) * 85 // 100
        gres = ""
        if self.fake_gpus:
            devices = self.base / "fakedev"
            devices.mkdir(exist_ok=True)
            for index in range(self.fake_gpus):
                device = devices / f"nvidia{index}"
                if not device.exists():
                    os.mknod(device, 0o666 | 0o020000, os.makedev(1, 3))  # like /dev/null
            files = (
                f"{devices}/nvidia[0-{self.fake_gpus - 1}]"
                if self.fake_gpus > 1
                else f"{devices}/nvidia0"
            )
            self._install(
                self.conf.with_name("gres.conf"),
                f"NodeName={self.node} Name=gpu Type=fake File={files}\n",
            )
            gres = f" Gres=gpu:fake:{self.fake_gpus}"
        for folder in ("state", "spool", "log"):
            (self.base / folder).mkdir(exist_ok=True)
        self._install(
            self.conf,
            f"""ClusterName=fashioncnn
SlurmctldHost={self.node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
{"GresTypes=gpu" if self.fake_gpus else ""}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=600
SlurmctldPidFile={self.base}/slurmctld.pid
SlurmdPidFile={self.base}/slurmd.pid
StateSaveLocation={self.base}/state
SlurmdSpoolDir={self.base}/spool
SlurmctldLogFile={self.log_folder}/slurmctld.log
SlurmdLogFile={self.log_folder}/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={field("CPUs")} Boards=1 SocketsPerBoard={field("SocketsPerBoard")} CoresPerSocket={field("CoresPerSocket")} ThreadsPerCore={field("ThreadsPerCore")} RealMemory={memory}{gres} State=UNKNOWN
PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""",
        )

    # ------------------------------------------------------------------ life cycle

    def _wait(self, what: str, ready, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(0.3)
        raise RuntimeError(f"{what} did not come up within {seconds} s; logs in {self.log_folder}")

    def up(self) -> LocalSlurm:
        self.base.mkdir(parents=True, exist_ok=True)
        self._start_munge()
        self._write_config()
        for daemon in ("slurmctld", "slurmd"):
            self._run(_binary(daemon), "-f", str(self.conf))
            self.started.append((daemon, self.base / f"{daemon}.pid"))
            if daemon == "slurmctld":
                self._wait(
                    "slurmctld", lambda: self._run("scontrol", "ping", check=False).returncode == 0
                )
        self._wait("the node", self._node_idle)
        return self

    def _node_idle(self) -> bool:
        state = self._run("sinfo", "-h", "-n", self.node, "-o", "%t", check=False).stdout.strip()
        if state.startswith(("down", "drain", "inval")):
            self._run("scontrol", "update", f"nodename={self.node}", "state=resume", check=False)
        return state.startswith(("idle", "mix", "alloc"))

    def down(self) -> None:
        for _daemon, pid_file in reversed(self.started):
            try:
                pid = int(pid_file.read_text().strip())
            except (OSError, ValueError):
                continue
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                continue
            for _ in range(40):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.25)
            else:
                os.kill(pid, 9)
        self.started.clear()
        for path, content in self.saved.items():
            if content is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(content)
        self.saved.clear()

    def squeue(self, fields: str) -> list[str]:
        """This cluster's queue, one line per job, in squeue's --format."""
        return self._run("squeue", "-h", "-o", fields).stdout.splitlines()

    def batch_script(self, job_id: str) -> str:
        return self._run("scontrol", "write", "batch_script", job_id, "-").stdout

    def requeue(self, job_id: str) -> None:
        """What a pre-emption with PreemptMode=REQUEUE does to a running job. SLURM holds a
        requeued job back for 120 s (its BeginTime); that wait is cut to now."""
        self._run("scontrol", "requeue", job_id)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.job(job_id).get("JobState") == "PENDING":
                self._run("scontrol", "update", f"JobId={job_id}", "StartTime=now")
                return
            time.sleep(0.5)
        raise RuntimeError(f"job {job_id} did not go back to the queue after scontrol requeue")

    def job(self, job_id: str) -> dict:
        """`scontrol show job` as a dict (finished jobs stay visible for MinJobAge)."""
        text = self._run("scontrol", "show", "job", job_id, "--oneliner").stdout
        return dict(item.split("=", 1) for item in text.split() if "=" in item)


if __name__ == "__main__":  # by hand: python tests/local_slurm.py up|down [FOLDER]
    import json
    import sys

    action, folder = (
        sys.argv[1],
        Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/fashion-cnn-slurm"),
    )
    cluster = LocalSlurm(folder)
    state = folder / "started.json"
    if action == "up":
        cluster.up()
        state.write_text(
            json.dumps({"started": [[n, str(p)] for n, p in cluster.started], "saved": {}})
        )
        print(
            f"one-node SLURM up (partition {cluster.partition}); stop with: python {sys.argv[0]} down {folder}"
        )
    elif action == "down":
        cluster.started = [(n, Path(p)) for n, p in json.loads(state.read_text())["started"]]
        cluster.down()
        print("SLURM down")
