"""The workflow passes `snakemake --lint` and `snakefmt --check` (snakefmt pinned in pyproject)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> Path:
    tool = BIN / name
    if not tool.exists():
        pytest.skip(f"{name} is not installed beside {sys.executable} (pip install -e '.[workflow,test]')")
    return tool


def test_snakemake_lint_reports_nothing():
    proc = subprocess.run([str(_tool("snakemake")), "--lint"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Lints for" not in out, out[-3000:]


def test_snakefmt_check_passes():
    proc = subprocess.run(
        [str(_tool("snakefmt")), "--check", "Snakefile", "workflow/rules"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
