"""End to end on a real SLURM cluster: the tiny demo through `--profile profiles/slurm`.

Needs a running cluster (a single node is enough: `sudo scripts/slurm/start_cluster.sh`
starts one, see config/README.md). Without one the tests skip, unless CELLBRIDGE_SLURM=1
is set: then a missing cluster is a failure, so CI cannot skip them silently.

The same configuration also runs locally (`--cores 2`); the prepared AnnData of both runs
must be identical.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import yaml

from test_workflow import TINY

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
PROFILE = ROOT / "profiles" / "slurm"
REQUIRED = os.environ.get("CELLBRIDGE_SLURM") == "1"
RUN_TIMEOUT = 480  # seconds for the whole SLURM run (about 90 s on a 2-core machine)
UP_STATES = {"idle", "mixed", "allocated", "completing"}
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+) \(log: (.+?)\)")

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def slurm_unavailable() -> str | None:
    """Why the SLURM tests cannot run here, or None when a cluster answers."""
    if not SNAKEMAKE.exists():
        return f"snakemake is not installed beside {sys.executable}"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except Exception as err:  # noqa: BLE001 (it also runs `which`/`scontrol` on import)
        return f"snakemake-executor-plugin-slurm is not usable ({err}): pip install -e '.[workflow]'"
    if shutil.which("sinfo") is None:
        return "no SLURM cluster: sinfo is not on PATH (start one: scripts/slurm/start_cluster.sh)"
    try:
        proc = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        return "no SLURM cluster: sinfo did not answer within 30 s"
    if proc.returncode != 0:
        return f"no SLURM cluster: sinfo failed: {proc.stderr.strip()}"
    states = proc.stdout.split()
    if not UP_STATES & set(states):
        return f"no SLURM node is up (sinfo states: {states or 'none'})"
    return None


def run(cmd: list[str], timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def snakemake_cmd(work: Path, *extra: str) -> list[str]:
    return [
        str(SNAKEMAKE), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
        "--configfile", str(work / "tiny.yaml"), *extra,
    ]


def cancel_leftovers(output: str) -> None:
    """scancel the jobs of an aborted run, so nothing stays queued on the cluster."""
    run_id = re.search(r"SLURM run ID: (\S+)", output)
    if run_id:
        subprocess.run(["scancel", "--name", run_id.group(1)], capture_output=True)
    ids = [m.group(1) for m in SUBMITTED.finditer(output)]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True)


def _text(out) -> str:
    return out.decode(errors="replace") if isinstance(out, bytes) else (out or "")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    reason = slurm_unavailable()
    if reason:
        if REQUIRED:
            pytest.fail(f"CELLBRIDGE_SLURM=1 but {reason}")
        pytest.skip(reason)

    dirs = {}
    for name in ("slurm", "local"):
        work = tmp_path_factory.mktemp(f"wf_{name}")
        (work / "tiny.yaml").write_text(yaml.safe_dump(TINY))
        dirs[name] = work

    # The local reference run goes alongside the SLURM run (which mostly waits on the
    # scheduler's status polling).
    local = subprocess.Popen(
        snakemake_cmd(dirs["local"], "--cores", "2"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        proc = run(
            snakemake_cmd(
                dirs["slurm"], "--profile", str(PROFILE), "--slurm-keep-successful-logs"
            ),
            timeout=RUN_TIMEOUT,
        )
    except subprocess.TimeoutExpired as err:
        output = _text(err.stdout) + _text(err.stderr)
        cancel_leftovers(output)
        local.kill()
        local.wait()
        pytest.fail(f"SLURM run did not finish within {RUN_TIMEOUT} s:\n{output[-4000:]}")
    slurm_output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        cancel_leftovers(slurm_output)
    try:
        local_output, _ = local.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        local.kill()
        local.wait()
        pytest.fail("local reference run did not finish within 600 s")
    assert proc.returncode == 0, f"SLURM run failed:\n{slurm_output[-4000:]}"
    assert local.returncode == 0, f"local run failed:\n{local_output[-4000:]}"
    return {"slurm": dirs["slurm"], "local": dirs["local"], "output": slurm_output}


def test_every_job_went_through_slurm(runs):
    work, output = runs["slurm"], runs["output"]
    submitted = {int(job): Path(log) for job, log in SUBMITTED.findall(output)}
    finished = re.findall(r"^Finished jobid: \d+ \(Rule: (\w+)\)", output, re.M)
    local_rules = re.findall(r"^localrule (\w+):", output, re.M)
    # Only the Snakefile's localrules (the `all` target, the cheap `compare`) may run
    # locally; every other job was submitted.
    assert set(local_rules) <= {"all", "compare"}, output[-3000:]
    # (>=: a job retried after a failure is submitted twice but finishes once)
    assert len(submitted) >= len(finished) - len(local_rules) > 0, output[-3000:]
    logdir = work / ".snakemake" / "slurm_logs"
    rules = {log.relative_to(logdir).parts[0] for log in submitted.values()}
    assert {"rule_simulate", "rule_prepare", "rule_train", "rule_translate", "rule_evaluate"} <= rules, rules
    prepared_domains = {
        log.parent.name for log in submitted.values() if log.parts[-3] == "rule_prepare"
    }
    assert prepared_domains == set(TINY["domains"])

    for job, log in submitted.items():
        # the job's own log (kept by --slurm-keep-successful-logs): snakemake ran inside
        # the SLURM job as a job step of the slurm-jobstep executor
        text = log.read_text()
        assert "--executor slurm-jobstep" in text, f"SLURM job {job}: {text[-2000:]}"
        assert "Finished jobid" in text, text[-2000:]

    # SLURM's own record of the jobs (kept by slurmctld for MinJobAge seconds after
    # they end; without accounting there is no other history)
    seen = 0
    for job in submitted:
        show = run(["scontrol", "show", "job", str(job)], timeout=30)
        if show.returncode != 0:  # already purged from slurmctld
            continue
        seen += 1
        assert "JobState=COMPLETED" in show.stdout, show.stdout
        assert f"WorkDir={work}" in show.stdout, show.stdout
        script = run(["scontrol", "write", "batch_script", str(job), "-"], timeout=30)
        if script.returncode == 0:
            # the job ran the submitting interpreter (the venv's python), not a `python`
            # from PATH
            venv_python = re.escape(str(Path(sys.executable).parent)) + r"/python[\d.]* -m snakemake"
            assert re.search(venv_python, script.stdout), script.stdout
    assert seen > 0, "slurmctld no longer knows any of the jobs (MinJobAge too short?)"


def _dense(x):
    return x.toarray() if sp.issparse(x) else np.asarray(x)


@pytest.mark.parametrize("domain", sorted(TINY["domains"]))
def test_slurm_run_matches_local_run(runs, domain):
    name = Path("results") / TINY["run"] / "prepared" / f"{domain}.h5ad"
    on_slurm = ad.read_h5ad(runs["slurm"] / name)
    local = ad.read_h5ad(runs["local"] / name)
    assert list(on_slurm.obs_names) == list(local.obs_names)
    assert list(on_slurm.var_names) == list(local.var_names)
    np.testing.assert_array_equal(_dense(on_slurm.X), _dense(local.X))
    for key in local.obsm:
        np.testing.assert_array_equal(on_slurm.obsm[key], local.obsm[key])


@pytest.mark.parametrize("method", ["mmd", "none"])
def test_slurm_metrics_equal_local_metrics(runs, method):
    """Same config and seed through SLURM and locally: the same models, the same numbers."""
    import json

    name = Path("results") / TINY["run"] / "metrics" / method / "seed0.json"
    on_slurm = json.loads((runs["slurm"] / name).read_text())
    local = json.loads((runs["local"] / name).read_text())
    assert on_slurm["metrics"].keys() == local["metrics"].keys()
    for key, value in local["metrics"].items():
        assert on_slurm["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
