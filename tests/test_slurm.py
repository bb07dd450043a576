"""Slurm (probes/slurm.py, examples/slurm/fleet.sbatch) against a real single-node Slurm started here:
munged, slurmctld -D and slurmd -D with state and logs in a temporary folder, stopped by PID afterwards.
`srun -n 2 python -m probes.collectives` needs no torchrun; the fleet script runs under `sbatch`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, fast_timing_toml

from probes import slurm
from probes.tomlcheck import ConfigError

TOOLS = ("munged", "slurmctld", "slurmd", "srun", "sbatch", "sinfo")
TINY = (
    fast_timing_toml(0.05)
    + """
[collectives]
ops = ["all_reduce"]
dtypes = ["fp32"]
min_bytes = 8
max_bytes = 32768
size_factor = 8
[bandwidth]
patterns = ["copy"]
variants = ["torch"]
working_set_cache_multiples = [0.01]
dram_min_cache_multiple = 0.005
[profiles.t]
probes = ["collectives", "bandwidth"]
"""
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _why_not() -> str | None:
    missing = [t for t in TOOLS if shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists()]
    if missing:
        return f"Slurm is not installed here ({', '.join(missing)} missing; .ci/run installs it)"
    if os.geteuid() != 0:
        return "a local Slurm needs root here (slurmd runs jobs as their users)"
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = _why_not()
    if why:
        pytest.skip(why)
    d = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool", "log"):
        (d / sub).mkdir()
    host = socket.gethostname().split(".")[0]
    conf = d / "slurm.conf"
    conf.write_text(
        f"""ClusterName=gpuprobe-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
EnforcePartLimits=ALL
MailProg=/bin/true
ReturnToService=2
NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    procs = []
    munge_ok = subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0
    if not munge_ok:  # munged needs its run folder, owned by its user
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        subprocess.run(["runuser", "-u", "munge", "--", "munged"], check=True, capture_output=True)
    for daemon in ("slurmctld", "slurmd"):
        log = open(d / "log" / f"{daemon}.out", "w")  # noqa: SIM115 - closed at teardown
        procs.append(
            (subprocess.Popen([daemon, "-D", "-f", str(conf)], env=env, stdout=log, stderr=log), log)
        )
    deadline = time.monotonic() + 60
    state = ""
    while time.monotonic() < deadline:
        state = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True
        ).stdout.strip()
        if state == "idle":
            break
        time.sleep(0.3)
    try:
        if state != "idle":
            pytest.skip(f"Slurm did not start here (node state {state!r}; logs in {d}/log)")
        yield env
    finally:
        for p, _log in procs:  # stopped by PID
            p.send_signal(signal.SIGTERM)
        for p, log in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
            log.close()
        pidfile = Path("/run/munge/munged.pid")
        if not munge_ok and pidfile.exists():  # the munged this fixture started
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGTERM)


def test_srun_runs_the_collectives_without_torchrun(cluster, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    out = tmp_path / "out"
    cmd = [
        "srun",
        "-n",
        "2",
        sys.executable,
        "-m",
        "probes.collectives",
        "--device",
        "cpu",
        "--config",
        str(cfg),
    ]
    r = subprocess.run(
        [*cmd, "--out", str(out)], cwd=REPO, env=cluster, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (path,) = out.glob("*.json")  # global rank 0 alone writes the document
    doc = json.loads(path.read_text())
    assert doc["status"] == "completed" and doc["notes"][0].startswith("srun: 2 ranks (gloo)")
    job = doc["host"]["slurm"]
    assert job["tasks"] == "2" and job["task"] == "0" and job["job_id"].isdigit()
    ok = [m for m in doc["measurements"] if m["status"] == "ok"]
    assert ok and all(m["params"]["world_size"] == 2 for m in ok)


def test_the_fleet_script_runs_under_sbatch(cluster, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    out = tmp_path / "fleet"
    script = REPO / "examples" / "slurm" / "fleet.sbatch"
    args = ["--device", "cpu", "--config", str(cfg), "--profile", "t", "--only", "bandwidth"]
    cmd = ["sbatch", "--wait", "-N", "1", f"--output={tmp_path}/job.out", str(script), str(out), "--", *args]
    env = {**cluster, "PATH": f"{Path(sys.executable).parent}:{cluster['PATH']}", "PYTHONPATH": str(REPO)}
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    log = (tmp_path / "job.out").read_text() if (tmp_path / "job.out").exists() else ""
    assert r.returncode == 0, r.stderr + log[-3000:]
    (path,) = out.glob("*.json")
    doc = json.loads(path.read_text())
    assert doc["host"]["slurm"]["job_name"] == "gpuprobe-fleet" and doc["host"]["slurm"]["node"]
    assert "Fleet of 1 node(s)" in log and "dram_copy_torch" in log


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "n1"}, "SLURM_LOCALID is missing"),
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0"}, "SLURM_JOB_NODELIST is missing"),
        ({"SLURM_PROCID": "x", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0", "SLURM_JOB_NODELIST": "n1"}, "'x'"),
        (
            {"SLURM_PROCID": "3", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0", "SLURM_JOB_NODELIST": "n1"},
            "does not fit",
        ),
    ],
)
def test_a_broken_slurm_environment_is_one_line_and_exit_2(env, expected):
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    r = subprocess.run(
        [sys.executable, "-m", "probes.collectives", "--device", "cpu"],
        cwd=REPO,
        env={**base, "SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert expected in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_rank_variables_and_host_lists():
    env = {
        "SLURM_PROCID": "9",
        "SLURM_NTASKS": "16",
        "SLURM_LOCALID": "1",
        "SLURM_JOB_ID": "4242",
        "SLURM_STEP_ID": "1",
        "SLURM_JOB_NODELIST": "gpu[07-08,12],login1",
    }
    assert slurm.ranks(env) == {
        "RANK": "9",
        "WORLD_SIZE": "16",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "gpu07",
        "MASTER_PORT": str(20000 + 4242 * 4 + 1),
    }
    assert slurm.first_host("node5") == "node5" and slurm.first_host("a[001-004]-ib") == "a001-ib"
    assert slurm.first_host("rack[0-63]_blade[0-41]") == "rack0_blade0"  # every bracket (issue 22)
    assert slurm.first_host("rack[3,5]-n[10-12],login1") == "rack3-n10"
    with pytest.raises(ConfigError, match="not a Slurm host list"):
        slurm.first_host("gpu[x-y]")
    assert slurm.under_srun(env) and not slurm.under_srun({**env, "SLURM_NTASKS": "1"})
    batch_script = {k: v for k, v in env.items() if k != "SLURM_STEP_ID"}  # sbatch's script: no step
    assert not slurm.under_srun(batch_script)
    assert slurm.job_facts({}) is None and slurm.job_facts(env)["job_id"] == "4242"
