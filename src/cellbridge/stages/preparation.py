"""Stages that make prepared domains: simulate the demo, import sci-CAR, prepare a domain; and reading prepared domains back."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .._io import InputError, read_h5ad, write_h5ad
from ..modalities import MODALITIES, get_modality
from .paths import PathLike, annotations_input, domain_input, prepared_path, scicar_dir, simulated_dir, simulates_crops

logger = logging.getLogger("cellbridge")


# --------------------------------------------------------------------------- stages
def simulate(config: dict[str, Any], out_dir: PathLike | None = None) -> dict[str, Path]:
    """Run the simulator the config's ``simulate`` section asks for (demo fields, or crops at scale)."""
    out = Path(out_dir) if out_dir is not None else simulated_dir(config)
    if simulates_crops(config):
        from ..simulate.large import simulate_large

        keys = ("n_cells", "n_genes", "n_types", "crop_size", "crop_pool", "test_fraction", "seed")
        return simulate_large(out, **{k: config["simulate"][k] for k in keys})
    from ..simulate import simulate_demo

    return simulate_demo(out, **_demo_simulation(config["simulate"]))


#: keys of the ``simulate`` section only the large-data simulator reads
_CROP_SIMULATION_KEYS = ("images", "crop_size", "crop_pool")


def _demo_simulation(section: dict[str, Any]) -> dict[str, Any]:
    """The ``simulate`` section without the crops-only keys (what the demo simulator reads)."""
    return {k: v for k, v in section.items() if k not in _CROP_SIMULATION_KEYS}


def import_scicar(config: dict[str, Any], out_dir: PathLike | None = None) -> dict[str, Path]:
    """Convert the sci-CAR A549 co-assay into per-domain AnnData files and a truth table."""
    from ..preprocess.scicar import write_scicar_inputs

    sc = config["scicar"]
    out = Path(out_dir) if out_dir is not None else scicar_dir(config)
    return write_scicar_inputs(sc["path"], out, test_fraction=sc["test_fraction"], seed=sc["seed"])


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
        Optional PNG: the QC plot (vector domains: sequencing and ``features``) or a contact
        sheet of crops (images).
    input_path
        Override the raw input (default: resolved from the config).
    """
    if domain not in config["domains"]:
        known = ", ".join(config["domains"])
        raise InputError(None, f"unknown domain '{domain}'; the config defines: {known}")
    dom = config["domains"][domain]
    modality = dom["modality"]
    # before anything is read: an unknown modality fails with its name, never falls back to
    # another's preprocessing (e.g. CLR-transforming values that are not protein counts)
    try:
        prepare = get_modality(modality).prepare_function()
    except ValueError:
        known = ", ".join(MODALITIES)
        raise InputError(None, f"domain {domain!r}: no preprocessing for modality {modality!r}; known: {known}") from None
    params = dict(config["preprocess"][modality])
    src = Path(input_path) if input_path is not None else domain_input(config, domain)
    label_key = config["label_key"]

    if get_modality(modality).image:
        from ..preprocess.image import plot_image_qc

        adata = prepare(src, domain=domain, annotations=annotations_input(config, domain), **params)
        if plot is not None:
            plot_image_qc(adata, plot)
    else:
        from ..preprocess.counts import read_counts
        from ..plotting import plot_qc

        # no name kept for the raw counts: the preparer frees them once it holds its copy
        adata = prepare(
            read_counts(src, layer=dom["layer"], transpose=dom["transpose"]),
            domain=domain, label_key=label_key, labels=dom["labels"], source=str(src), **params,
        )  # fmt: skip
        if plot is not None:
            plot_qc(adata, plot)
    out = Path(output) if output is not None else prepared_path(config, domain)
    write_h5ad(adata, out, compression=_prepared_compression(adata))
    logger.info("prepared %s: %d cells x %d features -> %s", domain, adata.n_obs, adata.n_vars, out)
    return adata


#: sparse X stored with more bytes than this is left on disk for training under ``load_x: auto``
LAZY_X_BYTES = 2 * 2**30


def _sparse_bytes(x) -> int:
    """Bytes of a sparse matrix's arrays (0 for a dense one)."""
    import scipy.sparse as sp

    return int(x.data.nbytes + x.indices.nbytes + x.indptr.nbytes) if sp.issparse(x) else 0


def _prepared_compression(adata) -> str | None:
    """gzip, except for a file whose sparse ``X`` training will read row by row from disk.

    Rows of a minibatch are scattered over the file, and in a compressed file each one
    costs decompressing the whole chunk that holds it: at a million cells that made an
    epoch 5x slower (750 instead of 3,500 cells/s). Such files are written uncompressed.
    """
    return None if _sparse_bytes(adata.X) > LAZY_X_BYTES else "gzip"


def _compressed_x(path: PathLike) -> bool:
    """True when the ``X/data`` of an ``.h5ad`` file is stored compressed."""
    import h5py

    with h5py.File(path, "r") as f:
        data = f.get("X/data")
        return data is not None and data.compression is not None


def read_prepared(
    config: dict[str, Any],
    paths: dict[str, PathLike] | None = None,
    *,
    for_training: bool = False,
    for_evaluation: bool = False,
) -> dict:
    """The prepared AnnData of every domain, keyed by domain name.

    ``for_training``: read only the layers the domain's likelihood uses (no raw counts
    for a Gaussian RNA domain), and leave a sparse ``X`` in its file when
    ``training.load_x`` says so (``auto``: when it holds more than 2 GiB).
    ``for_evaluation``: the same, plus the ``binary`` layer ATAC's AUROC is scored on;
    evaluation then reads only the rows it scores (a sample of ``evaluation.max_cells``).
    """
    paths = paths or {d: prepared_path(config, d) for d in config["domains"]}
    if not (for_training or for_evaluation):
        return {d: read_h5ad(p, f"prepared domain {d!r}") for d, p in paths.items()}
    load_x = config["training"].get("load_x", "auto")
    out = {}
    for d, p in paths.items():
        lazy = load_x == "disk" or (load_x == "auto" and _stored_sparse_x_bytes(p) > LAZY_X_BYTES)
        layers = training_layers(config, d) + (("binary",) if for_evaluation else ())
        out[d] = read_h5ad(p, f"prepared domain {d!r}", layers=tuple(dict.fromkeys(layers)), lazy_x=lazy)
        if lazy:
            logger.info("domain %r: X is read from %s minibatch by minibatch (training.load_x: %s)", d, p, load_x)
            if _compressed_x(p):
                logger.warning(
                    "%s: X is stored compressed, so each minibatch row decompresses a whole chunk (about "
                    "5x slower training); prepare writes such large files uncompressed - rerun it, or set "
                    "training.load_x: memory if the matrix fits in memory",
                    p,
                )
    return out


def training_layers(config: dict[str, Any], domain: str) -> tuple[str, ...]:
    """Layers the domain's likelihood reads: ``counts`` (negative binomial), ``binary`` (Bernoulli) or none."""
    from ..nn.likelihoods import likelihood_target

    dom = config["domains"][domain]
    target = likelihood_target(dom.get("model", {}).get("likelihood", "auto"), dom["modality"])
    return (target,) if target in ("counts", "binary") else ()


def _stored_sparse_x_bytes(path: PathLike) -> int:
    """Bytes of a CSR ``X`` as stored in an ``.h5ad`` file (0 when dense, absent or unreadable)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            x = f.get("X")
            if not isinstance(x, h5py.Group) or x.attrs.get("encoding-type") != "csr_matrix":
                return 0
            return sum(int(x[k].size) * x[k].dtype.itemsize for k in ("data", "indices", "indptr") if k in x)
    except OSError:
        return 0  # read_h5ad reports the unreadable file
