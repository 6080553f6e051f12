"""One function per workflow step, called by both the CLI and the Snakemake scripts.

Each stage takes the validated config dict (see :mod:`cellbridge.config`) plus the
paths it writes, so a rule and the equivalent ``cellbridge <stage>`` command run the
very same code. Paths of intermediate results are built here too (``results/{run}/…``),
so the Snakefile and the CLI cannot disagree about where a file lives.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ._io import InputError, write_h5ad

logger = logging.getLogger("cellbridge")

PathLike = str | os.PathLike


# --------------------------------------------------------------------------- paths
def results_dir(config: dict[str, Any]) -> Path:
    """``results/{run}``: everything a run writes lives below it."""
    return Path("results") / config["run"]


def simulated_dir(config: dict[str, Any]) -> Path:
    """Where the demo simulator writes its (unpaired) domains and the truth."""
    return results_dir(config) / "simulated"


def scicar_dir(config: dict[str, Any]) -> Path:
    """Where the sci-CAR co-assay is converted into per-domain files and a truth table."""
    return results_dir(config) / "scicar"


def prepared_path(config: dict[str, Any], domain: str) -> Path:
    return results_dir(config) / "prepared" / f"{domain}.h5ad"


def _source_dir(config: dict[str, Any], kind: str) -> Path:
    return {"simulated": simulated_dir, "scicar": scicar_dir}[kind](config)


def domain_input(config: dict[str, Any], domain: str) -> Path:
    """The raw input of ``domain``: a generated file for 'simulated'/'scicar', else the path."""
    dom = config["domains"][domain]
    inp = dom["input"]
    if inp in ("simulated", "scicar"):
        if dom["modality"] == "image":
            return _source_dir(config, inp) / "fields"
        return _source_dir(config, inp) / f"{dom['modality']}.h5ad"
    return Path(inp)


def annotations_input(config: dict[str, Any], domain: str) -> Path | None:
    """Annotation table joined onto segmented nuclei (image domains), if any."""
    ann = config["domains"][domain].get("annotations")
    if ann is None:
        return None
    if ann == "simulated":
        return simulated_dir(config) / "image_labels.tsv"
    return Path(ann)


def truth_path(config: dict[str, Any]) -> Path | None:
    """The truth table read by evaluation, or None when the config has none."""
    truth = config.get("truth")
    if truth is None:
        return None
    if truth in ("simulated", "scicar"):
        return _source_dir(config, truth) / "truth.tsv"
    return Path(truth)


# --------------------------------------------------------------------------- stages
def simulate(config: dict[str, Any], out_dir: PathLike | None = None) -> dict[str, Path]:
    """Run the demo simulator with the config's ``simulate`` section."""
    from .simulate import simulate_demo

    out = Path(out_dir) if out_dir is not None else simulated_dir(config)
    return simulate_demo(out, **config["simulate"])


def import_scicar(config: dict[str, Any], out_dir: PathLike | None = None) -> dict[str, Path]:
    """Convert the sci-CAR A549 co-assay into per-domain AnnData files and a truth table."""
    from .preprocess.scicar import write_scicar_inputs

    sc = config["scicar"]
    out = Path(out_dir) if out_dir is not None else scicar_dir(config)
    return write_scicar_inputs(sc["path"], out, test_fraction=sc["test_fraction"], seed=sc["seed"])


def _sequencing_preparer(modality: str):
    if modality == "rna":
        from .preprocess.rna import prepare_rna as prepare
    elif modality == "atac":
        from .preprocess.atac import prepare_atac as prepare
    else:
        from .preprocess.protein import prepare_protein as prepare
    return prepare


def prepare_domain(
    config: dict[str, Any],
    domain: str,
    *,
    output: PathLike | None = None,
    plot: PathLike | None = None,
    input_path: PathLike | None = None,
):
    """Read and preprocess one domain into the prepared-AnnData contract; write it atomically.

    Parameters
    ----------
    config
        Validated configuration.
    domain
        Name of the domain (a key of ``config["domains"]``).
    output
        Destination ``.h5ad`` (default ``results/{run}/prepared/{domain}.h5ad``).
    plot
        Optional PNG: the QC plot (sequencing) or a contact sheet of crops (images).
    input_path
        Override the raw input (default: resolved from the config).
    """
    if domain not in config["domains"]:
        known = ", ".join(config["domains"])
        raise InputError(None, f"unknown domain '{domain}'; the config defines: {known}")
    dom = config["domains"][domain]
    modality = dom["modality"]
    params = dict(config["preprocess"][modality])
    src = Path(input_path) if input_path is not None else domain_input(config, domain)
    label_key = config["label_key"]

    if modality == "image":
        from .preprocess.image import plot_contact_sheet, prepare_image

        adata = prepare_image(
            src, domain=domain, annotations=annotations_input(config, domain), **params
        )
        if plot is not None:
            plot_contact_sheet(adata, plot)
    else:
        from .preprocess.counts import read_counts
        from .preprocess.qc import plot_qc

        prepare = _sequencing_preparer(modality)
        raw = read_counts(src, layer=dom["layer"], transpose=dom["transpose"])
        adata = prepare(
            raw, domain=domain, label_key=label_key, labels=dom["labels"], source=str(src), **params
        )
        if plot is not None:
            plot_qc(adata, plot)
    out = Path(output) if output is not None else prepared_path(config, domain)
    write_h5ad(adata, out)
    logger.info("prepared %s: %d cells x %d features -> %s", domain, adata.n_obs, adata.n_vars, out)
    return adata
