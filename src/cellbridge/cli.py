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
from ._io import InputError, exit_process, is_user_error
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


@_command("train")
def _train(args, config):
    stages.train(config, args.method, args.seed, progress=not args.quiet, fresh=args.fresh)


@_command("translate")
def _translate(args, config):
    if args.model:
        if not (args.source and args.target and args.input and args.output):
            raise InputError(None, "--model needs --source, --target, --input and --output")
        stages.translate_query(args.model, args.source, args.target, args.input, args.output)
        return
    stages.translate(config, args.method, args.seed)


@_command("evaluate")
def _evaluate(args, config):
    result = stages.evaluate(config, args.method, args.seed)
    for name, value in sorted(result["metrics"].items()):
        print(f"{name}\t{value:.4g}")
    for reason in result["skipped"]:
        print(f"skipped: {reason}", file=sys.stderr)


@_command("compare")
def _compare(args, config):
    files = [stages.metrics_path(config, m, s) for m in stages.methods(config) for s in config["seeds"]]
    out = stages.results_dir(config)
    table = stages.compare(config, files, table=out / "comparison.tsv", summary=out / "comparison_summary.tsv",
                           figure=out / "plots" / "comparison.png")
    print(table.to_string(index=False))


@_command("generate")
def _generate(args, config):
    paths = stages.generate_cells(
        args.model, args.out, n=args.n, around=args.around, domain=args.domain,
        groupby=args.groupby, group=args.group, seed=args.seed,
    )
    for d, p in paths.items():
        print(f"{d}\t{p}")


#: commands that work from a saved model alone (no workflow config needed)
_NO_CONFIG = {"generate"}


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
        if name not in _NO_CONFIG:
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

    def model_args(p, *, required=True):
        p.add_argument("-m", "--method", required=required, help="alignment method (adversarial, wasserstein, mmd, none)")
        p.add_argument("-s", "--seed", type=int, default=0, help="model seed (default: %(default)s)")

    p = add("train", "train one model (method x seed) on the prepared domains; resumes from its checkpoint")
    model_args(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--fresh", action="store_true", help="start from epoch 1, ignoring any checkpoint of an earlier run")
    p = add(
        "translate",
        "translate every domain into every domain with a trained model, or (with --model) "
        "translate new prepared cells of one domain with a saved model",
    )
    model_args(p, required=False)
    p.add_argument("--model", help="saved model folder (reference -> query mode)")
    p.add_argument("--source", help="query mode: the domain of --input")
    p.add_argument("--target", help="query mode: the domain to translate into")
    p.add_argument("-i", "--input", help="query mode: prepared .h5ad of new source cells")
    p.add_argument("-o", "--output", help="query mode: output .h5ad")
    p = add("evaluate", "score one model on held-out cells (metrics JSON + plots)")
    model_args(p)
    add("compare", "gather every method and seed into comparison.tsv and a figure")
    p = add("generate", "sample latent points and decode them into every domain")
    p.add_argument("--model", required=True, help="saved model folder")
    p.add_argument("-n", type=int, default=100, help="cells to generate (default: %(default)s)")
    p.add_argument("--around", help="prepared .h5ad of cells to sample around (needed for non-variational models)")
    p.add_argument("--domain", help="domain of --around")
    p.add_argument("--groupby", help="obs column selecting a group of --around cells")
    p.add_argument("--group", help="the group's value")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder ({domain}.h5ad per domain)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        needs_config = args.command not in _NO_CONFIG and not getattr(args, "model", None)
        config = load_config(args.config) if needs_config else None
        if needs_config and args.command in ("train", "evaluate", "translate") and args.method is None:
            raise InputError(args.config, f"{args.command} needs --method (one of {', '.join(stages.methods(config))})")
        _COMMANDS[args.command](args, config)
    except Exception as err:
        if not (is_user_error(err) or isinstance(err, KeyError)):
            raise
        print(f"cellbridge {args.command}: error: {err}", file=sys.stderr)
        exit_process(err, 2)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
