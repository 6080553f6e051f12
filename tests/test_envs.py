"""The workflow's one conda env: pinned as pyproject.toml pins, complete, and buildable."""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> dict[str, str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in meta["optional-dependencies"].values():
        reqs += extra
    return {_name(r): r for r in reqs}


def _name(req: str) -> str:
    for i, ch in enumerate(req):
        if ch in "<>=!~[ ;":
            return req[:i].lower()
    return req.lower()


@pytest.mark.parametrize("env", sorted((ROOT / "envs").glob("*.yaml")), ids=lambda p: p.stem)
def test_env_pins_match_pyproject(env):
    spec = yaml.safe_load(env.read_text())
    pip = [d for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert pip, f"{env.name}: no pip section"
    declared = _pyproject_requirements()
    for req in pip[0]["pip"]:
        name = _name(req)
        assert name in declared, f"{env.name}: {name} is not a dependency in pyproject.toml"
        assert req == declared[name], f"{env.name}: '{req}' differs from pyproject '{declared[name]}'"


ENV = ROOT / "envs" / "cellbridge.yaml"


def _env_pip() -> list[str]:
    spec = yaml.safe_load(ENV.read_text())
    return next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)


def test_every_rule_runs_in_the_one_env():
    envs = {
        f"{rule.name}: {m}"
        for rule in (ROOT / "workflow" / "rules").glob("*.smk")
        for m in re.findall(r'^\s+"([^"]+\.yaml)"\s*$', rule.read_text(), flags=re.M)
    }
    assert envs and {e.split(": ")[1] for e in envs} == {"../../envs/cellbridge.yaml"}, sorted(envs)
    assert sorted(p.name for p in (ROOT / "envs").iterdir()) == ["cellbridge.yaml"]


def test_the_env_holds_every_runtime_dependency_and_umap():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # what a job imports: the package's dependencies, and UMAP for the latent figures
    needed = {_name(r) for r in meta["dependencies"]} | {"umap-learn"}
    assert needed <= {_name(r) for r in _env_pip()}


@pytest.mark.slow
def test_a_job_runs_in_a_clean_venv_built_from_the_env(tmp_path):
    # the env's pip list in a venv that has nothing else (cellbridge comes from the checkout
    # through _bootstrap, as in a conda job): a job's imports and a stage function run
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("\n".join(_env_pip()) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    pip = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(reqs)],
        capture_output=True, text=True, timeout=1500, env=env,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    job = (
        "import sys; sys.path.insert(0, 'workflow/scripts'); import _bootstrap\n"
        "import cellbridge, umap\n"
        "from cellbridge import stages, model, plotting\n"
        "from cellbridge.config import load_config\n"
        "cfg = load_config('config/config.yaml')\n"
        "print(cellbridge.__file__, stages.results_dir(cfg), stages.methods(cfg))\n"
    )
    proc = subprocess.run([str(python), "-c", job], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert str(ROOT / "src" / "cellbridge") in proc.stdout  # the checkout's source, not an installed copy
