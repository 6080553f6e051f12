"""The command line: every stage has a subcommand with --help; errors exit 2 with the file named."""

import subprocess
import sys
from pathlib import Path

import pytest

from cellbridge.cli import build_parser, main

SUBCOMMANDS = ["validate", "simulate", "import-scicar", "prepare", "train", "translate", "evaluate", "compare", "generate"]


@pytest.mark.parametrize("cmd", SUBCOMMANDS)
def test_every_subcommand_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([cmd, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out or "--model" in out


def test_parser_lists_the_stages():
    helptext = build_parser().format_help()
    for cmd in SUBCOMMANDS:
        assert cmd in helptext


def test_bad_config_exits_2_naming_the_file(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("domains:\n  rna: {modality: rna, input: simulated}\n")
    assert main(["validate", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert str(cfg) in err and "domains" in err


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "cellbridge"
    assert script.exists(), f"{script}: the cellbridge entry point is not installed"
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("cellbridge ")
