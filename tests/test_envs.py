"""The per-stage conda envs pin packages exactly as pyproject.toml does."""

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


def test_every_stage_has_an_env():
    assert {p.stem for p in (ROOT / "envs").glob("*.yaml")} >= {"preprocessing", "training", "evaluation"}
