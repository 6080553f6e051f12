"""``cellbridge`` command line: one subcommand per workflow stage.

Every subcommand reads the same YAML config as the Snakemake workflow and calls the
same function in :mod:`cellbridge.stages` as the corresponding rule, so any step can
be rerun by hand, e.g. ``cellbridge prepare --config config/config.yaml --domain rna``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from . import __version__, stages
from ._io import InputError
from .config import load_config

_COMMANDS: dict[str, Callable[[argparse.Namespace, dict], None]] = {}


def _command(name: str):
    def register(fn):
        _COMMANDS[name] = fn
        return fn

    return register


@_command("validate")
def _validate(args, config):
    print(f"{args.config}: valid; domains: {', '.join(config['domains'])}")


@_command("simulate")
def _simulate(args, config):
    paths = stages.simulate(config, args.out)
    for key, path in paths.items():
        print(f"{key}\t{path}")


@_command("import-scicar")
def _import_scicar(args, config):
    paths = stages.import_scicar(config, args.out)
    for key, path in paths.items():
        print(f"{key}\t{path}")


@_command("prepare")
def _prepare(args, config):
    domains = args.domain or list(config["domains"])
    if len(domains) > 1 and args.output:
        raise InputError(None, "--output needs exactly one --domain")
    for domain in domains:
        stages.prepare_domain(
            config, domain, output=args.output, plot=args.plot, input_path=args.input
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellbridge",
        description="Integrate and translate single cells between imaging and sequencing domains.",
    )
    parser.add_argument("--version", action="version", version=f"cellbridge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument(
            "-c", "--config", default="config/config.yaml", help="workflow config (default: %(default)s)"
        )
        return p

    add("validate", "validate a config file against the schema and print the domains")
    p = add("simulate", "simulate the paired demo data set (RNA, ATAC, microscopy fields, truth)")
    p.add_argument("--out", help="output folder (default: results/{run}/simulated)")
    p = add("import-scicar", "convert the sci-CAR A549 co-assay into per-domain inputs + truth")
    p.add_argument("--out", help="output folder (default: results/{run}/scicar)")
    p = add("prepare", "preprocess one or all domains into prepared AnnData (.h5ad)")
    p.add_argument("-d", "--domain", action="append", help="domain name (repeatable; default: all)")
    p.add_argument("-i", "--input", help="override the domain's input path")
    p.add_argument("-o", "--output", help="output .h5ad (default: results/{run}/prepared/{domain}.h5ad)")
    p.add_argument("--plot", help="also write the QC plot / contact sheet PNG here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(args.config)
        _COMMANDS[args.command](args, config)
    except InputError as err:
        print(f"cellbridge {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
