"""The SLURM profile (profiles/slurm) on a real single-node SLURM cluster started by the test.

The test starts munged, slurmctld and slurmd as root from a generated slurm.conf in a
temporary directory (Debian's slurm-wlm 22.05 packages: slurmctld, slurmd, slurm-client,
munge; `.ci/run` installs them), runs the tiny pipeline's stage-1 targets through
`--profile profiles/slurm` beside a one-rule GPU workflow, and stops every daemon and job
again, also on failure. It skips where SLURM cannot be started (not root, binaries missing,
no mount namespaces).

How the cluster differs from a real one, and why:
  * no slurmdbd, so `sacct` has nothing to report: the plugin polls `squeue` instead
    (`--slurm-status-command squeue`). `squeue` only lists a finished job for MinJobAge
    seconds, so MinJobAge stays at SLURM's default of 300 s, above the plugin's longest poll
    interval (180 s). With a low MinJobAge the plugin falls back to `sacct`, or never sees a
    finished job and waits forever.
  * the jobstep executor removes SLURM_CONF from the environment before it calls `srun`
    inside the job, so `srun` reads /etc/slurm/slurm.conf, as on a real node: slurmd runs in
    its own mount namespace with the temporary directory bind-mounted on /etc/slurm. Nothing
    outside the temporary directory is written.
  * one fake GPU (`Gres=gpu:1`, File=/dev/null) lets a rule with `resources: gpu=1` show that
    the profile turns it into a GPU request that SLURM allocates.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "tiny.yaml"
PROFILE = REPO / "profiles" / "slurm"
VENV_BIN = os.path.dirname(sys.executable)

# Stage-1 artifacts of tests/data/tiny.yaml: 5 jobs, ~2 min through SLURM on 2 cores (`all` grows with
# the pipeline, so it is not the target here).
TARGETS = ("data/logs/focused_topdown.npz",
           *(f"results/focused_topdown/reference/{p}.json" for p in ("random", "oracle", "eps-greedy")))
PARTITION = "slate_test"
MARKER = "SLATE_RL_SLURM_TEST_DIR"  # set on every process the test starts, to find leftovers
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel", "unshare")

GPU_SNAKEFILE = """\
rule gpu_probe:
    output:
        "gpu.txt",
    threads: 1
    resources:
        gpu=1,
        mem_mb=200,
        runtime=5,
    shell:
        "echo CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES-unset}} > {output}"
"""


def _skip_reason() -> str | None:
    if sys.platform != "linux" or os.geteuid() != 0:
        return "starting SLURM daemons needs root on Linux"
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return (f"SLURM/munge not installed (missing {', '.join(missing)}; "
                "apt-get install slurmctld slurmd slurm-client munge)")
    if not Path("/etc/slurm").is_dir():
        return "/etc/slurm does not exist (slurmd's config is bind-mounted there)"
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "mount", "--bind", "/etc/slurm", "/etc/slurm"],
        capture_output=True, text=True,
    )
    if probe.returncode != 0:
        return f"cannot create a mount namespace for slurmd: {probe.stderr.strip()}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_hardware() -> dict[str, int]:
    """CPUs and memory as slurmd detects them (`slurmd -C`)."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(kv.split("=", 1) for kv in out.splitlines()[0].split()[1:])
    keys = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    return {k: int(fields[k]) for k in keys}


def _slurm_conf(d: Path, node: str, hw: dict[str, int]) -> str:
    # The tiny pipeline needs 2 CPUs (logged_sessions has threads: 2) and 8000 MB for one job.
    # On a smaller machine declare that much anyway: nothing enforces it here (no cgroups).
    overrides = hw["CPUs"] < 2 or hw["RealMemory"] < 10240
    cpus = max(hw["CPUs"], 2)
    memory = max(hw["RealMemory"], 10240)
    topology = (
        f"CPUs={cpus} Boards={hw['Boards']} SocketsPerBoard={hw['SocketsPerBoard']} "
        f"CoresPerSocket={hw['CoresPerSocket']} ThreadsPerCore={hw['ThreadsPerCore']}"
        if not overrides else f"CPUs={cpus}"
    )
    return f"""\
ClusterName=slatetest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/run/munge.sock
SlurmUser=root
SlurmdUser=root
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/run/slurmctld.pid
SlurmdPidFile={d}/run/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
MinJobAge=300
GresTypes=gpu
{"SlurmdParameters=config_overrides" if overrides else ""}
NodeName={node} NodeAddr=127.0.0.1 {topology} RealMemory={memory} Gres=gpu:1 State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class Cluster:
    dir: Path
    env: dict[str, str]
    daemons: list[subprocess.Popen] = field(default_factory=list)

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(cmd), capture_output=True, text=True, env=self.env, timeout=30, check=check)

    def logs(self) -> str:
        """Tails of the daemons' logs and of the SLURM logs of the jobs, for failure messages."""
        paths = [self.dir / "log" / f"{d}.{ext}" for ext in ("log", "out") for d in ("slurmctld", "slurmd", "munged")]
        paths += sorted(self.dir.glob("work/*/.snakemake/slurm_logs/**/*.log"))
        parts = [f"--- {p} (tail)\n" + "\n".join(p.read_text(errors="replace").splitlines()[-25:])
                 for p in paths if p.is_file()]
        return "\n".join(parts)

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen:
        out = open(self.dir / "log" / f"{name}.out", "w")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=self.env, start_new_session=True)
        out.close()
        self.daemons.append(proc)
        return proc

    def wait_for(self, what: str, ready, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.daemons:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[0]} exited ({p.returncode}) waiting for {what}\n{self.logs()}")
            if ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.logs()}")


def _marked_pids(marker: str) -> list[int]:
    """Processes whose environment carries this test's marker: daemons, slurmstepd, job steps."""
    pids = []
    needle = f"{MARKER}={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
    return pids


def _teardown(cluster: Cluster) -> None:
    # Cancel whatever is still queued or running, so slurmd ends the job steps itself.
    with contextlib.suppress(Exception):
        ids = cluster.run("squeue", "--noheader", "--format=%i", "--states=PENDING,RUNNING,CONFIGURING,COMPLETING",
                          check=False).stdout.split()
        if ids:
            cluster.run("scancel", *ids, check=False)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and cluster.run(
                    "squeue", "--noheader", "--format=%i", "--states=PENDING,RUNNING,CONFIGURING,COMPLETING",
                    check=False).stdout.strip():
                time.sleep(0.5)
    # slurmd, slurmctld, munged: in reverse order of start.
    for proc in reversed(cluster.daemons):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in reversed(cluster.daemons):
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    # Anything they left behind (slurmscriptd, slurmstepd, a job step): by pid, found by the marker.
    for _ in range(3):
        leftovers = _marked_pids(str(cluster.dir))
        if not leftovers:
            break
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
    shutil.rmtree(cluster.dir, ignore_errors=True)


@pytest.fixture
def slurm_cluster():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    d = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))  # short: the munge socket path has a length limit
    d.chmod(0o711)  # munged wants its socket reachable by everyone
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
    env.update({
        "PATH": VENV_BIN + os.pathsep + env.get("PATH", "/usr/bin:/bin"),  # `slate-rl` inside the jobs
        "SLURM_CONF": str(d / "etc" / "slurm.conf"),
        MARKER: str(d),
    })
    cluster = Cluster(dir=d, env=env)
    try:
        for sub in ("etc", "run", "log", "state", "spool", "munge"):
            (d / sub).mkdir(mode=0o755)
        (d / "munge").chmod(0o700)
        key = d / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        node = socket.gethostname().split(".")[0]
        (d / "etc" / "slurm.conf").write_text(_slurm_conf(d, node, _node_hardware()))
        (d / "etc" / "gres.conf").write_text(f"NodeName={node} Name=gpu File=/dev/null\n")

        cluster.start("munged", [
            "munged", "--foreground", "--force", f"--socket={d}/run/munge.sock", f"--key-file={key}",
            f"--pid-file={d}/run/munged.pid", f"--log-file={d}/log/munged.log", f"--seed-file={d}/munge/munged.seed",
        ])
        cluster.wait_for("munged", lambda: (d / "run" / "munge.sock").exists(), timeout=20)
        cluster.start("slurmctld", ["slurmctld", "-D", "-f", env["SLURM_CONF"]])
        cluster.wait_for("slurmctld", lambda: cluster.run("scontrol", "ping", check=False).stdout.count("UP") > 0)
        cluster.start("slurmd", [
            "unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
            'mount --bind "$1" /etc/slurm && exec slurmd -D -N "$2" -f "$1/slurm.conf"',
            "sh", str(d / "etc"), node,
        ])
        cluster.wait_for("the node to be idle", lambda: cluster.run(
            "sinfo", "--noheader", "--Node", "--format=%t", check=False).stdout.strip() == "idle")
        yield cluster
    finally:
        _teardown(cluster)


def _snakemake(cluster: Cluster, workdir: Path, *args: str, targets: tuple[str, ...] = ()) -> subprocess.Popen:
    """Start snakemake with the SLURM profile; its output goes to <workdir>.snakemake.log."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    # A --default-resources on the command line replaces the profile's list: pass its entries along.
    defaults = [f"{k}={v}" for k, v in profile["default-resources"].items()] + [f"slurm_partition={PARTITION}"]
    cmd = [
        os.path.join(VENV_BIN, "snakemake"), *targets,  # first: --configfile takes several values
        "--profile", str(PROFILE), "--directory", str(workdir),
        "--default-resources", *defaults,
        "--slurm-status-command", "squeue",           # no slurmdbd, so no sacct
        "--slurm-init-seconds-before-status-checks", "2",  # poll soon after submitting and after each finish
        "--seconds-between-status-checks", "2",
        "--slurm-keep-successful-logs",
        "--retries", "0",                              # fail fast instead of resubmitting twice
        *args,
    ]
    with open(f"{workdir}.snakemake.log", "w") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=cluster.env, cwd=REPO, start_new_session=True)


def _finish(proc: subprocess.Popen, workdir: Path, timeout: float) -> tuple[int, str]:
    """Wait for a snakemake started by _snakemake (kill it after timeout): exit status and output."""
    try:
        rc = proc.wait(timeout=max(timeout, 1))
        suffix = ""
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        rc, suffix = proc.wait(), f"\n[killed after {timeout:.0f} s]"
    return rc, Path(f"{workdir}.snakemake.log").read_text(errors="replace") + suffix


def _total_jobs(out: str) -> int:
    """The `total` row of Snakemake's job stats table."""
    match = re.search(r"^total\s+(\d+)$", out, re.MULTILINE)
    assert match, out[-4000:]
    return int(match.group(1))


SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_tiny_pipeline_runs_through_slurm_with_the_profile(slurm_cluster):
    cluster = slurm_cluster
    # Inside the cluster's directory, so that teardown removes them too.
    pipeline_dir, gpu_dir = cluster.dir / "work" / "pipeline", cluster.dir / "work" / "gpu"
    gpu_dir.mkdir(parents=True)
    (gpu_dir / "Snakefile").write_text(GPU_SNAKEFILE)

    started = time.monotonic()
    # Both at once: the GPU probe runs beside the pipeline's first job.
    procs = {
        pipeline_dir: _snakemake(cluster, pipeline_dir, "--snakefile", str(REPO / "Snakefile"),
                                 "--configfile", str(TINY), targets=TARGETS),
        gpu_dir: _snakemake(cluster, gpu_dir, "--snakefile", str(gpu_dir / "Snakefile")),
    }
    try:
        results = {d.name: _finish(p, d, timeout=200 - (time.monotonic() - started)) for d, p in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    for name, (rc, out) in results.items():
        assert rc == 0, f"snakemake ({name}) failed with {rc}:\n{out[-6000:]}\n{cluster.logs()}"

    # The artifacts, and the item table they were built from.
    out = results["pipeline"][1]
    for rel in ("data/embeddings/focused.npy", *TARGETS):
        assert (pipeline_dir / rel).is_file() and (pipeline_dir / rel).stat().st_size > 0, rel

    # Each job was an sbatch job that SLURM ran to completion.
    submitted = SUBMITTED.findall(out)
    assert len(submitted) == _total_jobs(out) == 5, out[-4000:]
    queue = dict(line.split("|", 1) for line in cluster.run(
        "squeue", "--noheader", "--states=all", "--format=%i|%T").stdout.split())
    for _, slurm_id, log in submitted:
        assert queue.get(slurm_id) == "COMPLETED", (slurm_id, queue)
        assert Path(log).is_file(), log
    rule_logs = {Path(log).parent.parent.name for _, _, log in submitted}
    assert rule_logs == {"rule_item_embeddings", "rule_logged_sessions", "rule_reference_policy"}

    # A rule with `resources: gpu=1` asks SLURM for one GPU, and gets it.
    gpu_ids = [slurm_id for _, slurm_id, _ in SUBMITTED.findall(results["gpu"][1])]
    assert len(gpu_ids) == 1, results["gpu"][1][-3000:]
    job = cluster.run("scontrol", "show", "job", gpu_ids[0]).stdout
    assert re.search(r"TresPerJob=gres:gpu:1\b", job), job
    assert (gpu_dir / "gpu.txt").read_text().strip() == "CUDA_VISIBLE_DEVICES=0"


def test_gpu_resource_becomes_an_sbatch_gpus_request():
    """`resources: gpu=1` (the GPU rules' convention) maps to `sbatch --gpus=1` in this plugin version."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    class Resources(dict):
        __getattr__ = dict.__getitem__

    def job(**resources):
        return SimpleNamespace(resources=Resources(resources), threads=4, name="train", wildcards={})

    params = {"run_uuid": "u", "slurm_logfile": "l", "comment_str": "c", "account": "", "partition": " -p gpu",
              "workdir": "/w"}
    gpu_job = job(gpu=1, mem_mb=16000, runtime=120)
    assert set_gres_string(gpu_job) == " --gpus=1"
    call = get_submit_command(gpu_job, params)
    assert "--cpus-per-task=4" in call and "--mem 16000" in call and "-t 120" in call and "-p gpu" in call
    assert set_gres_string(job(gpu=2, gpu_model="h100")) == " --gpus=h100:2"
    assert set_gres_string(job(mem_mb=1000)) == ""
