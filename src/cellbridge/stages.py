"""One function per workflow step, called by both the CLI and the Snakemake scripts.

Each stage takes the validated config dict (see :mod:`cellbridge.config`) plus the
paths it writes, so a rule and the equivalent ``cellbridge <stage>`` command run the
very same code. Paths of intermediate results are built here too (``results/{run}/…``),
so the Snakefile and the CLI cannot disagree about where a file lives.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._io import InputError, read_h5ad, write_h5ad
from .contract import LATENT_KEY
from .modalities import MODALITIES, get_modality

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
            return _source_dir(config, inp) / ("crops.h5ad" if simulates_crops(config) else "fields")
        return _source_dir(config, inp) / f"{dom['modality']}.h5ad"
    return Path(inp)


def simulates_crops(config: dict[str, Any]) -> bool:
    """True when the simulator writes ready crops (``simulate.images: crops``), not fields."""
    return config["simulate"].get("images", "fields") == "crops"


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
    """Run the simulator the config's ``simulate`` section asks for (demo fields, or crops at scale)."""
    out = Path(out_dir) if out_dir is not None else simulated_dir(config)
    if simulates_crops(config):
        from .simulate.large import simulate_large

        keys = ("n_cells", "n_genes", "n_types", "crop_size", "crop_pool", "test_fraction", "seed")
        return simulate_large(out, **{k: config["simulate"][k] for k in keys})
    from .simulate import simulate_demo

    return simulate_demo(out, **_demo_simulation(config["simulate"]))


#: keys of the ``simulate`` section only the large-data simulator reads
_CROP_SIMULATION_KEYS = ("images", "crop_size", "crop_pool")


def _demo_simulation(section: dict[str, Any]) -> dict[str, Any]:
    """The ``simulate`` section without the crops-only keys (what the demo simulator reads)."""
    return {k: v for k, v in section.items() if k not in _CROP_SIMULATION_KEYS}


def import_scicar(config: dict[str, Any], out_dir: PathLike | None = None) -> dict[str, Path]:
    """Convert the sci-CAR A549 co-assay into per-domain AnnData files and a truth table."""
    from .preprocess.scicar import write_scicar_inputs

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
        from .preprocess.image import plot_image_qc

        adata = prepare(src, domain=domain, annotations=annotations_input(config, domain), **params)
        if plot is not None:
            plot_image_qc(adata, plot)
    else:
        from .preprocess.counts import read_counts
        from .plotting import plot_qc

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


# --------------------------------------------------------------------------- training
def methods(config: dict[str, Any]) -> list[str]:
    """Alignment methods to train: the configured ones plus the 'none' baseline."""
    out = list(config["alignment"]["methods"])
    if config["alignment"]["baseline"] and "none" not in out:
        out.append("none")
    return out


def model_dir(config: dict[str, Any], method: str, seed: int | str) -> Path:
    return results_dir(config) / "models" / method / f"seed{seed}"


def checkpoint_dir(config: dict[str, Any], method: str, seed: int | str) -> Path:
    """Checkpoints live outside the declared outputs, so Snakemake never deletes them."""
    return results_dir(config) / "checkpoints" / method / f"seed{seed}"


def translated_path(config: dict[str, Any], method: str, seed: int | str, source: str, target: str) -> Path:
    return results_dir(config) / "translated" / method / f"seed{seed}" / f"{source}_to_{target}.h5ad"


def metrics_path(config: dict[str, Any], method: str, seed: int | str) -> Path:
    return results_dir(config) / "metrics" / method / f"seed{seed}.json"


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
    from .nn.likelihoods import likelihood_target

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


def _anchors(config: dict[str, Any]):
    table = config["alignment"]["anchors"]["table"]
    if table is None:
        return None
    import csv

    import pandas as pd

    from ._io import require_path

    try:
        anchors = pd.read_csv(require_path(table, "anchor table"), sep=None, engine="python")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(table, f"not a readable anchor table ({type(err).__name__})") from None
    domains = ", ".join(config["domains"])
    named = [c for c in anchors.columns if c in config["domains"]]
    if len(named) < 2:
        # the header of a file that is no table is its first line: not echoed as column names
        raise InputError(
            table, f"an anchor table needs a header naming at least two domains ({domains}); its header names {len(named)}"
        )
    unknown = set(anchors.columns) - set(config["domains"])
    if unknown:
        shown = [str(c)[:40] for c in sorted(map(str, unknown))[:5]]
        raise InputError(table, f"anchor columns {shown} are not domains ({domains})")
    return anchors


def aligner_options(config: dict[str, Any], method: str) -> dict[str, Any]:
    """The aligner's own options from ``alignment.<method>`` (its ``weight`` is a training option)."""
    if method == "none":
        return {}
    return {k: v for k, v in config["alignment"].get(method, {}).items() if k != "weight"}


def uses_labels(config: dict[str, Any], method: str) -> bool:
    """Whether ``method`` trains with the label classifier.

    Aligners do when ``alignment.labels.use`` is set (or their options are conditional).
    ``none`` is the no-alignment reference: independent autoencoders, without labels
    unless ``alignment.labels.baseline`` asks for the label-matching reference (the
    label classifier on unaligned autoencoders), which shows what an aligner adds beyond
    matching labels.
    """
    labels = config["alignment"]["labels"]
    if method == "none":
        return bool(labels["use"] and labels.get("baseline", False))
    return bool(labels["use"] or aligner_options(config, method).get("conditional"))


#: where in the config each option of :meth:`~cellbridge.model.CrossModalModel.train` that
#: the workflow sets is read (the alignment weight depends on the method: :func:`alignment_weight`).
#: The one table between the two: a test holds the schema's defaults to the API's.
TRAIN_OPTIONS: dict[str, tuple[str, ...]] = {
    "max_epochs": ("training", "max_epochs"),
    "batch_size": ("training", "batch_size"),
    "lr": ("training", "lr"),
    "weight_decay": ("training", "weight_decay"),
    "validation_fraction": ("training", "validation_fraction"),
    "early_stopping_patience": ("training", "early_stopping_patience"),
    "checkpoint_every": ("training", "checkpoint_every"),
    "warmup_epochs": ("alignment", "warmup_epochs"),
    "ramp_epochs": ("alignment", "ramp_epochs"),
    "align_schedule": ("alignment", "schedule"),
    "label_weight": ("alignment", "labels", "weight"),
    "label_smoothing": ("alignment", "labels", "smoothing"),
    "match_label_batches": ("alignment", "labels", "match_batches"),
    "anchor_weight": ("alignment", "anchors", "weight"),
    "prior_weight": ("alignment", "correspondence", "weight"),
}


def train_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """The :meth:`~cellbridge.model.CrossModalModel.train` options a validated config sets (:data:`TRAIN_OPTIONS`)."""
    out = {}
    for option, path in TRAIN_OPTIONS.items():
        value = config
        for key in path:
            value = value[key]
        out[option] = value
    return out


def alignment_weight(config: dict[str, Any], method: str) -> float:
    """``alignment.<method>.weight`` when set, else ``alignment.weight``; 0 for ``none``.

    The losses live on different scales (a KL to the uniform, a Sinkhorn divergence,
    an MMD), so the weight that balances one against reconstruction need not suit another.
    """
    if method == "none":
        return 0.0
    return float(config["alignment"].get(method, {}).get("weight", config["alignment"]["weight"]))


def build_model(config: dict[str, Any], adatas: dict, method: str, seed: int):
    """A :class:`~cellbridge.model.CrossModalModel` configured from the workflow config."""
    from .model import CrossModalModel

    align = config["alignment"]
    options = aligner_options(config, method)
    use_labels = uses_labels(config, method)
    return CrossModalModel(
        adatas,
        latent_dim=config["model"]["latent_dim"],
        alignment=method,
        alignment_kwargs=options,
        variational=config["model"]["variational"],
        kl_weight=config["model"]["kl_weight"],
        label_key=config["label_key"] if use_labels else None,
        anchors=_anchors(config),
        anchor_fraction=align["anchors"]["fraction"],
        correspondence=align["correspondence"]["method"],
        correspondence_kwargs={k: v for k, v in align["correspondence"].items() if k not in ("method", "weight")},
        domain_kwargs={d: dict(dom["model"]) for d, dom in config["domains"].items()},
        seed=seed,
        device=config["training"]["device"],
    )


def train(
    config: dict[str, Any],
    method: str,
    seed: int,
    *,
    prepared: dict[str, PathLike] | None = None,
    out_dir: PathLike | None = None,
    checkpoints: PathLike | None = None,
    progress: bool = False,
    fresh: bool = False,
):
    """Train one model (method x seed); write it, its history, loss curves and latents.

    Held-out cells (``obs["split"] == "test"``) are excluded from training; the latent
    of every cell is written, one ``{domain}.h5ad`` per domain with ``obsm["X_cellbridge"]``.
    An interrupted run resumes from ``checkpoints`` (default
    ``results/{run}/checkpoints/{method}/seed{seed}``) unless ``fresh`` is true; a
    checkpoint written under another configuration is set aside with a warning.
    """
    import anndata as ad
    import torch

    from .plotting import plot_history

    torch.set_num_threads(config["training"]["threads"])
    adatas = read_prepared(config, prepared, for_training=True)
    model = build_model(config, adatas, method, seed)
    model.train(
        **train_options(config),
        align_weight=alignment_weight(config, method),
        checkpoint_dir=checkpoints if checkpoints is not None else checkpoint_dir(config, method, seed),
        resume=not fresh,
        progress=progress,
    )
    out = Path(out_dir) if out_dir is not None else model_dir(config, method, seed)
    model.save(out)
    plot_history(
        model.history, out / "loss_curve.png", title=f"{method}, seed {seed}", align_weight=alignment_weight(config, method)
    )
    # the prior's candidates and the one chosen, as columns (storable in .h5ad)
    rows = model.config.get("correspondence", {}).get("candidates") or []
    candidates = {key: [row[key] for row in rows] for key in rows[0]} if rows else {}
    for domain, adata in adatas.items():
        # slim: the cells' obs and latent, not another copy of the prepared matrices
        latent = ad.AnnData(obs=adata.obs.copy(), uns=dict(adata.uns))
        latent.obsm[LATENT_KEY] = model.get_latent(domain, adata)
        latent.uns.setdefault("cellbridge", {})["model"] = {"method": method, "seed": int(seed), "path": str(out)}
        if candidates:
            latent.uns["cellbridge"]["correspondence"] = candidates
        write_h5ad(latent, out / f"{domain}.h5ad")
    logger.info("trained %s (seed %s): %d epochs -> %s", method, seed, len(model.history), out)
    return model


# --------------------------------------------------------------------------- translation
def domain_pairs(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (source, target) pair of domains, ``d -> d`` (reconstruction) included: one translation each.

    The workflow builds its file lists from these pair lists and hands them to the jobs as
    ``params``, so a rule's outputs and its script's pairs come from one place.
    """
    doms = list(config["domains"])
    return [(s, t) for s in doms for t in doms]


def image_pairs(config: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) pairs with an image target and another source: those get a gallery."""
    doms = config["domains"]
    return [(s, t) for s in doms for t in doms if s != t and doms[t]["modality"] == "image"]


def _truth_or_none(config: dict[str, Any]):
    from .truth import read_truth

    tpath = truth_path(config)
    return read_truth(tpath) if tpath is not None else None


#: Cells a gallery draws its examples from: the held-out cells of the source, or a seeded
#: sample of this many of them (the examples and a vector source's z-scores come from
#: these); only they are translated again for the figure, so a gallery costs the same
#: at a million cells as at a thousand.
GALLERY_MAX_CELLS = 2000


def translate(
    config: dict[str, Any],
    method: str,
    seed: int,
    *,
    model_path: PathLike | None = None,
    prepared: dict[str, PathLike] | None = None,
    outputs: dict[tuple[str, str], PathLike] | None = None,
    galleries: dict[tuple[str, str], PathLike] | None = None,
):
    """Translate every domain's cells into every domain (``d -> d`` is the reconstruction).

    The cells of each source domain are translated ``translation.chunk_cells`` at a time
    and each piece is appended to every target's file as it comes
    (:class:`_TranslationFile`), so neither a whole translation nor a sparse ``X`` of a
    source (left in its file) is ever in memory: memory grows with the chunk, not with
    the cells. Each file is moved into place only when complete, and reads as the
    AnnData that :meth:`~cellbridge.model.CrossModalModel.translate` gives for all
    cells at once. ``translation.morphology: false`` leaves the morphology features of
    predicted crops unmeasured (``X`` of image targets has no features; the crops are
    in ``obsm["image"]``).

    Image targets also get a gallery PNG of held-out cells: the source cell, the
    predicted nucleus and, where the truth table pairs them, the measured nucleus
    (drawn from at most :data:`GALLERY_MAX_CELLS` held-out cells).
    """
    from .model import CrossModalModel

    settings = config["translation"]
    adatas = _read_translation_sources(config, prepared)
    model = CrossModalModel.load(model_path or model_dir(config, method, seed), adatas)
    for source in config["domains"]:
        dests = {
            target: (outputs or {}).get((source, target)) or translated_path(config, method, seed, source, target)
            for target in config["domains"]
        }
        translate_in_chunks(
            model, source, adatas[source], dests, chunk_cells=settings["chunk_cells"], morphology=settings["morphology"]
        )
    truth = _truth_or_none(config) if galleries else None
    for (source, target), png in (galleries or {}).items():
        cells = gallery_cells(adatas[source])
        # a gallery shows crops only: their morphology is not needed
        out = model.translate(source, target, cells, morphology=False)
        plot_gallery(
            out, cells, adatas[target], png,
            truth=truth, label_key=config["label_key"], title=f"{method}, seed {seed}: {source} → {target}",
        )
    return model


def _read_translation_sources(config: dict[str, Any], paths: dict[str, PathLike] | None) -> dict:
    """Every prepared domain, a sparse ``X`` left in its file and only the layers a model requires.

    Registering a domain with a model checks the ``counts`` layer of a negative-binomial
    domain (translation itself never reads it); no other layer is read.
    """
    paths = paths or {d: prepared_path(config, d) for d in config["domains"]}
    return {
        d: read_h5ad(
            p, f"prepared domain {d!r}", layers=[k for k in training_layers(config, d) if k == "counts"], lazy_x=True
        )
        for d, p in paths.items()
    }


def cell_rows(adata, rows: slice | Sequence[int]):
    """Cells ``rows`` (a slice or an array of positions) of a prepared domain as an in-memory AnnData.

    An ``X`` left in its file is read for these rows only. Not an AnnData view: a view
    drops the categories of ``obs`` columns its cells lack, which would give each piece
    of a translation different categories than the whole.
    """
    import anndata as ad

    from ._io import as_rows

    def take(values):
        return values.iloc[rows] if hasattr(values, "iloc") else values[rows]

    return ad.AnnData(
        X=as_rows(adata.X)[rows],
        obs=adata.obs.iloc[rows],
        var=adata.var,
        obsm={k: take(v) for k, v in adata.obsm.items()},
        layers={k: as_rows(v)[rows] for k, v in adata.layers.items()},
        uns=adata.uns,
    )


def translate_in_chunks(
    model, source: str, adata, dests: dict[str, PathLike], *, chunk_cells: int, morphology: bool = True
) -> dict[str, Path]:
    """Translate the cells of ``source`` into each target of ``dests``, ``chunk_cells`` cells at a time.

    Parameters
    ----------
    model
        :class:`~cellbridge.model.CrossModalModel` (with the target domains registered,
        whose ``var`` the outputs carry).
    source
        Source domain.
    adata
        Its prepared cells (``X`` may be left in its file: :func:`cellbridge._io.read_h5ad`
        with ``lazy_x=True``).
    dests
        Target domain -> ``.h5ad`` to write (atomically: all or none of each).
    chunk_cells
        Source cells translated at once: memory grows with it, not with the cells.
    morphology
        As in :meth:`~cellbridge.model.CrossModalModel.translate`.
    """
    import time

    if isinstance(chunk_cells, bool) or not isinstance(chunk_cells, int) or chunk_cells < 1:
        raise ValueError(f"chunk_cells must be a positive integer, got {chunk_cells!r}")
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        files = {target: stack.enter_context(_translation_file(dest)) for target, dest in dests.items()}
        for start in range(0, adata.n_obs, chunk_cells):
            piece = cell_rows(adata, slice(start, start + chunk_cells))
            for target, file in files.items():
                file.append(model.translate(source, target, piece, morphology=morphology))
            done = start + piece.n_obs
            logger.info(
                "translated %s: %d of %d cells into %s (%.0f cells/s)",
                source, done, adata.n_obs, ", ".join(files), done / max(time.perf_counter() - t0, 1e-9),
            )
    return {target: Path(dest) for target, dest in dests.items()}


@contextlib.contextmanager
def _translation_file(dest: PathLike) -> Iterator[_TranslationFile]:
    """A :class:`_TranslationFile` writing ``dest``: moved into place only when every piece is in."""
    import h5py

    from ._io import _quiet_h5py_cleanup, atomic_path

    with atomic_path(dest) as tmp, _quiet_h5py_cleanup():
        with h5py.File(tmp, "w") as f:
            out = _TranslationFile(f, dest)
            yield out
            out.finish()


class _TranslationFile:
    """One translation written into an ``.h5ad`` file piece by piece (consecutive cells).

    The per-cell elements (``X``, ``obsm``, ``layers``: dense, as translations hold them)
    grow with each piece, compressed as :func:`cellbridge._io.write_h5ad` compresses; ``obs``
    of all pieces, ``var`` and ``uns`` are written by :meth:`finish`, with the counts of
    clipped values summed over the pieces. The file then reads as the AnnData one
    :meth:`~cellbridge.model.CrossModalModel.translate` call for all cells gives (its
    ``time`` is when the first piece was made). HDF5 chunks hold whole rows, so reading a
    few cells of a backed file (evaluation) decompresses little beyond them.
    """

    #: bytes per HDF5 chunk of a per-cell element
    CHUNK_BYTES = 1 << 16
    COMPRESSION = "gzip"

    def __init__(self, file, dest: PathLike):
        self.file = file
        self.dest = dest
        self.n_obs = 0
        self.paths: set[str] = set()
        self.obs: list = []
        self.var = None
        self.uns: dict[str, Any] | None = None
        self.n_clipped = 0

    @staticmethod
    def per_cell(piece) -> dict[str, Any]:
        """The per-cell elements of ``piece`` by their path in the file."""
        import numpy as np

        elems = {"X": piece.X, **{f"obsm/{k}": v for k, v in piece.obsm.items()}}
        elems.update({f"layers/{k}": v for k, v in piece.layers.items()})
        return {path: np.asarray(v) for path, v in elems.items()}

    def append(self, piece) -> None:
        """Add the next cells (an AnnData of :meth:`CrossModalModel.translate`)."""
        import copy

        from anndata.io import write_elem

        elems = self.per_cell(piece)
        if self.uns is None:
            write_elem(self.file, "obsm", {})
            write_elem(self.file, "layers", {})
            for path, values in elems.items():
                write_elem(self.file, path, values, dataset_kwargs=self._growing(values))
            self.paths, self.var, self.uns = set(elems), piece.var, copy.deepcopy(dict(piece.uns))
        else:
            if set(elems) != self.paths:
                raise ValueError(f"{self.dest}: a piece has elements {sorted(elems)}, the first had {sorted(self.paths)}")
            for path, values in elems.items():
                dataset = self.file[path]
                dataset.resize(self.n_obs + len(values), axis=0)
                dataset[self.n_obs :] = values
        self.obs.append(piece.obs)
        self.n_clipped += int(piece.uns["cellbridge"].get("n_clipped", 0))
        self.n_obs += piece.n_obs

    def _growing(self, values) -> dict[str, Any]:
        """``dataset_kwargs`` of a per-cell dataset that grows along the cells, chunked by whole rows."""
        rest = values.shape[1:]
        row_bytes = values.dtype.itemsize * int(math.prod(rest))
        # a row without values (X of crops whose morphology is not measured) lets h5py choose
        chunks = (max(1, self.CHUNK_BYTES // row_bytes), *rest) if row_bytes else True
        return {"compression": self.COMPRESSION, "maxshape": (None, *rest), "chunks": chunks}

    def finish(self) -> None:
        """Write ``obs``, ``var``, ``uns`` and the empty elements, as :func:`anndata.AnnData.write_h5ad` does."""
        import anndata as ad
        import pandas as pd
        from anndata.io import write_elem

        if self.uns is None:
            raise InputError(self.dest, "a translation of no cells is not written")
        meta = self.uns["cellbridge"]
        if "n_clipped" in meta:
            meta["n_clipped"] = self.n_clipped
            meta["translation"]["n_clipped"] = self.n_clipped
        whole = ad.AnnData(obs=pd.concat(self.obs), var=self.var, uns=self.uns)
        # as AnnData.write_h5ad does, over all cells (a column becomes categorical by its whole)
        whole.strings_to_categoricals()
        self.file.attrs.setdefault("encoding-type", "anndata")
        self.file.attrs.setdefault("encoding-version", "0.1.0")
        for key, elem in (("obs", whole.obs), ("var", whole.var), ("varm", dict(whole.varm)),
                          ("obsp", dict(whole.obsp)), ("varp", dict(whole.varp)), ("uns", dict(whole.uns))):
            write_elem(self.file, key, elem, dataset_kwargs={"compression": self.COMPRESSION})


def gallery_cells(adata, *, max_cells: int = GALLERY_MAX_CELLS):
    """The held-out cells of a domain a gallery is drawn from, in memory (all, or a seeded sample of ``max_cells``)."""
    import numpy as np

    from .evaluate import held_out_mask, sample_rows

    held = np.flatnonzero(held_out_mask(adata)[0])
    return cell_rows(adata, held[sample_rows(held.size, max_cells, seed=0, key="gallery")])


def plot_gallery(translated, source, target, path: PathLike, *, truth=None, label_key=None, title="", n=12):
    """Gallery of held-out cells: source cell, predicted nucleus, measured nucleus (if paired)."""
    import numpy as np

    from .evaluate import held_out_mask
    from .plotting import plot_image_gallery
    from .truth import cell_ids_for, paired_indices

    mask, _ = held_out_mask(translated)
    tr, src = translated[mask], source[mask]
    true_crops = None
    if truth is not None:
        ip, it = paired_indices(cell_ids_for(tr.obs, truth), cell_ids_for(target.obs, truth))
        if len(ip):
            tr, src = tr[ip], src[ip]
            true_crops = np.asarray(target.obsm["image"])[it]
    is_img = "image" in src.obsm
    return plot_image_gallery(
        np.asarray(tr.obsm["image"]),
        source=np.asarray(src.obsm["image"]) if is_img else src.X,
        source_kind="image" if is_img else "vector",
        source_feature_names=None if is_img else list(src.var_names),
        true_crops=true_crops,
        labels=tr.obs[label_key].astype(str).to_numpy() if label_key and label_key in tr.obs else None,
        source_name=source.uns["cellbridge"]["domain"],
        cell_names=list(tr.obs_names),
        n=n,
        path=path,
        title=title + (" (held-out cells)" if true_crops is not None else ""),
    )


# --------------------------------------------------------------------------- evaluation
def vector_pairs(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Cross-domain (source, target) pairs with a vector target."""
    doms = config["domains"]
    return [(s, t) for s in doms for t in doms if s != t and doms[t]["modality"] != "image"]


def scatter_pairs(config: dict[str, Any]) -> list[tuple[str, str]]:
    """The pairs ``evaluate`` draws a predicted-against-measured scatter for: vector targets, when truth exists."""
    return vector_pairs(config) if config.get("truth") else []


def evaluate(
    config: dict[str, Any],
    method: str,
    seed: int,
    *,
    latents: dict[str, PathLike] | None = None,
    translated: dict[tuple[str, str], PathLike] | None = None,
    prepared: dict[str, PathLike] | None = None,
    output: PathLike | None = None,
    scatters: dict[tuple[str, str], PathLike] | None = None,
) -> dict[str, Any]:
    """Score one model on held-out cells; write ``metrics/{method}/seed{seed}.json`` and plots.

    Translations are opened backed: of their ``X`` only the rows scored are read (at most
    ``evaluation.max_cells`` pairs), so a translation of a million cells is never loaded whole.
    """
    from ._io import write_json
    from .evaluate import evaluate_run, held_out_mask, take_rows, translation_pairs
    from .plotting import plot_translation_scatter
    from .truth import cell_ids_for


    domains = list(config["domains"])
    lat = {
        d: read_h5ad((latents or {}).get(d) or model_dir(config, method, seed) / f"{d}.h5ad", f"latent of {d!r}")
        for d in domains
    }
    # the model's layers (and ATAC's binary one), a large sparse X left in its file: at 1M
    # cells reading every prepared matrix whole took 12 GiB for a few thousand scored rows
    prep = read_prepared(config, prepared, for_evaluation=True)
    trans = {}
    try:
        for s in domains:
            for t in domains:
                path = (translated or {}).get((s, t)) or translated_path(config, method, seed, s, t)
                trans[(s, t)] = read_h5ad(path, f"translation {s} -> {t}", backed=True)
        truth = _truth_or_none(config)
        ev = config["evaluation"]
        result = evaluate_run(
            lat,
            translations=trans,
            prepared=prep,
            truth=truth,
            label_key=config["label_key"],
            latent_dim=config["model"]["latent_dim"],
            k_values=tuple(ev["k"]),
            label_k=ev["label_k"],
            entropy_k=ev["entropy_k"],
            top_genes=ev["top_genes"],
            max_cells=ev["max_cells"],
            sample_seed=ev["sample_seed"],
        )
        result = {"method": method, "seed": int(seed), **result}
        write_json(result, output or metrics_path(config, method, seed))

        for (s, t), path in (scatters or {}).items():
            if truth is None:
                raise InputError(None, f"scatter {s} -> {t} needs a truth table (config 'truth')")
            # the pairs (and sample of pairs) the translation metrics of s -> t were computed on
            mask = held_out_mask(lat[s])[0]
            ip, it, _ = translation_pairs(
                trans[(s, t)], mask, cell_ids_for(lat[s].obs.loc[mask], truth), prep[t], truth,
                max_cells=ev["max_cells"], seed=ev["sample_seed"], key=f"{s}_to_{t}",
            )
            plot_translation_scatter(
                take_rows(trans[(s, t)].X, ip), take_rows(prep[t].X, it), feature_names=list(prep[t].var_names),
                path=path,
                title=f"{method}, seed {seed}: {s} → {t}, held-out cells with a measured partner",
                units=get_modality(config["domains"][t]["modality"]).units,
            )
    finally:
        for tr in trans.values():
            tr.file.close()
    return result


def shift_figure(
    config: dict[str, Any],
    method: str,
    seed: int,
    *,
    prepared: dict[str, PathLike] | None = None,
    model_path: PathLike | None = None,
    output: PathLike | None = None,
) -> Path:
    """Draw one model's latent-shift figure (:func:`plot_shift`), ``plots/evaluate/{method}/seed{seed}/latent_shift.png``.

    Its own job (rule ``plot_shift``): the only step after training that decodes with the
    model besides translation, so scoring (:func:`evaluate`) never loads the model.
    """
    from .model import CrossModalModel

    prep = read_prepared(config, prepared, for_evaluation=True)
    model = CrossModalModel.load(model_path or model_dir(config, method, seed), prep)
    ev = config["evaluation"]
    path = output or results_dir(config) / "plots" / "evaluate" / method / f"seed{seed}" / "latent_shift.png"
    return plot_shift(
        model, prep, path=path, label_key=config["label_key"], title=f"{method}, seed {seed}",
        max_cells=ev["max_cells"], seed=ev["sample_seed"],
    )  # fmt: skip


def plot_latents(
    config: dict[str, Any], items: list[tuple[str, int, dict[str, PathLike], PathLike]], *, seed: int = 0
) -> None:
    """UMAP of the joint latent of held-out cells for each (method, seed, latents, png).

    All models are embedded in one process: UMAP's numba compilation (tens of seconds)
    is then paid once per run rather than once per model.
    """
    import numpy as np

    from .evaluate import held_out_mask, labels_for
    from .plotting import plot_joint_latent
    from .truth import cell_ids_for

    truth = _truth_or_none(config)
    label_key = config["label_key"]
    # UMAP of a seeded sample of the held-out cells above this; the title gives the sizes
    max_cells = config["evaluation"]["umap_max_cells"]
    for method, model_seed, latents, png in items:
        lat = {d: read_h5ad(p, f"latent of {d!r}") for d, p in latents.items()}
        z, labels = {}, {}
        for d, a in lat.items():
            held = a[held_out_mask(a)[0]]
            z[d] = np.asarray(held.obsm[LATENT_KEY])
            ids = cell_ids_for(held.obs, truth) if truth is not None else None
            found = labels_for(held, label_key, ids, truth)
            if found is not None:
                labels[d] = found
        plot_joint_latent(
            z, labels=labels or None, path=png, method=f"{method} (seed {model_seed}), held-out cells", seed=seed,
            max_cells=max_cells,
        )


def plot_shift(
    model, adatas: dict, *, path: PathLike, label_key: str | None, title: str = "",
    max_cells: int | None = None, seed: int = 0,
) -> Path:  # fmt: skip
    """Latent-shift figure: the two largest groups of the first labelled domain (or two
    latent k-means clusters when no domain has labels), source moved onto target.

    With ``max_cells``, a larger domain is drawn on a seeded sample of that many cells
    (:func:`~cellbridge.evaluate.sample_rows`): the figure shows group means, and
    decoding every cell in every domain, twice, took gigabytes and minutes at 1M cells.
    """
    import numpy as np

    from .evaluate import sample_rows
    from .generate import latent_shift, shift_features
    from .plotting import plot_latent_shift

    labelled = [d for d in adatas if label_key and label_key in adatas[d].obs and adatas[d].obs[label_key].notna().any()]
    domain = labelled[0] if labelled else next(iter(adatas))
    adata = adatas[domain]
    if max_cells is not None and adata.n_obs > max_cells:
        adata = adata[sample_rows(adata.n_obs, max_cells, seed=seed, key="latent_shift")].copy()
    groupby = label_key if labelled else "latent_cluster"
    if not labelled:
        from sklearn.cluster import KMeans

        adata = adata.copy()
        z = model.get_latent(domain, adata)
        adata.obs[groupby] = KMeans(2, n_init=10, random_state=0).fit_predict(z).astype(str)
    source, target = adata.obs[groupby].astype(str).value_counts().index[:2]
    before, after, vec = latent_shift(model, domain, groupby=groupby, source=source, target=target, adata=adata)
    logger.info("latent shift %s -> %s in %s: |shift| = %.3g", source, target, domain, float(np.linalg.norm(vec)))
    return plot_latent_shift(
        shift_features(before), shift_features(after),
        feature_names={d: list(before[d].var_names) for d in before}, path=path,
        title=f"{title}: {domain} cells of {groupby}={source} shifted towards {target}, decoded in every domain",
    )


#: How the rows of comparison tables are labelled: trained aligners are ``method``; the
#: references every method must beat are baselines.
BASELINES = {"none": "baseline: no alignment", "trivial": "baseline: training mean"}
#: Significant digits kept in the comparison tables (differences between seeds are larger).
TABLE_DIGITS = 4


def _count_column(name: str) -> bool:
    return name.startswith("n_")


def _rounded(table, digits: int = TABLE_DIGITS):
    """Counts (``n_*`` columns, ``seed``) as nullable integers, other numbers to ``digits`` significant digits."""
    import numpy as np
    import pandas as pd

    out = table.copy()
    for col in out.columns:
        if not pd.api.types.is_numeric_dtype(out[col]):
            continue
        if col == "seed" or col == "n_seeds" or _count_column(col.removesuffix("_mean")):
            out[col] = pd.array(np.round(out[col].to_numpy(dtype=float)), dtype="Int64")
        else:
            values = out[col].to_numpy(dtype=float)
            with np.errstate(divide="ignore", invalid="ignore"):
                scale = np.where(values == 0, 0, np.floor(np.log10(np.abs(values))))
            decimals = np.clip(digits - 1 - np.nan_to_num(scale), 0, 12).astype(int)
            out[col] = [round(v, int(d)) if np.isfinite(v) else np.nan for v, d in zip(values, decimals, strict=True)]
    return out


def comparison_tables(results: list[dict[str, Any]]):
    """The per-seed and the summary comparison of evaluation results (``metrics/*.json`` contents).

    Returns
    -------
    per_seed
        One row per method and seed: ``method``, ``kind`` (``method`` or the baseline it is,
        :data:`BASELINES`), ``seed`` (empty for the ``trivial`` predictor, which has none) and
        every metric; counts as integers, other values to :data:`TABLE_DIGITS` significant digits.
    summary
        One row per method: ``method``, ``kind``, ``n_seeds``, then ``<metric>_mean`` and, where
        some method has at least two seeds, ``<metric>_sd`` (sample SD, empty for methods with
        one seed); counts are not averaged into SDs (only ``<count>_mean`` is given).
    """
    import numpy as np
    import pandas as pd

    rows, trivial = [], {}
    for res in results:
        rows.append({"method": res["method"], "seed": res["seed"], **res["metrics"]})
        trivial.update(res.get("trivial", {}))
    per_seed = pd.DataFrame(rows)
    if trivial:
        per_seed = pd.concat([per_seed, pd.DataFrame([{"method": "trivial", "seed": np.nan, **trivial}])])
    per_seed.insert(1, "kind", per_seed["method"].map(BASELINES).fillna("method"))
    # trained methods first (in the order given), then the baselines
    order = {m: i for i, m in enumerate(dict.fromkeys(r["method"] for r in rows if r["method"] not in BASELINES))}
    order.update({b: len(order) + i for i, b in enumerate(BASELINES)})
    per_seed = per_seed.assign(_order=per_seed["method"].map(order)).sort_values(["_order", "seed"])
    per_seed = per_seed.drop(columns="_order").reset_index(drop=True)
    metrics = [c for c in per_seed.columns if c not in ("method", "kind", "seed")]
    grouped = per_seed.groupby("method", sort=False)
    summary = pd.DataFrame({"method": list(grouped.groups), "kind": grouped["kind"].first().to_numpy()})
    n_seeds = grouped["seed"].count().to_numpy()
    summary["n_seeds"] = n_seeds
    several = bool((n_seeds >= 2).any())
    for m in metrics:
        summary[f"{m}_mean"] = grouped[m].mean().to_numpy()
        if several and not _count_column(m):
            sd = grouped[m].std(ddof=1).to_numpy()
            summary[f"{m}_sd"] = np.where(n_seeds >= 2, sd, np.nan)
    return _rounded(per_seed), _rounded(summary)


def compare(
    config: dict[str, Any],
    metric_files: list[PathLike],
    *,
    table: PathLike,
    summary: PathLike | None = None,
    figure: PathLike | None = None,
    results_page: PathLike | None = None,
):
    """Gather all methods x seeds into one table (plus the trivial predictor) and a figure.

    ``table`` and ``summary`` are the two tables of :func:`comparison_tables` (TSV);
    ``figure`` the headline metrics per method (:func:`cellbridge.plotting.plot_comparison`);
    ``results_page`` the HTML fragment the report opens on (:func:`cellbridge.report.results_page`).
    """
    import json

    from ._io import write_table
    from .plotting import plot_comparison

    per_seed, summary_table = comparison_tables([json.loads(Path(f).read_text()) for f in metric_files])
    write_table(per_seed, table, index=False)
    if summary is not None:
        write_table(summary_table, summary, index=False)
    if figure is not None:
        plot_comparison(
            per_seed.drop(columns="kind"), path=figure, metrics=headline_metrics(per_seed) or None,
            title=f"run '{config['run']}': held-out cells",
        )
    if results_page is not None:
        from .report import results_page as write_results_page

        write_results_page(config, per_seed, summary_table, figure=figure, path=results_page)
    return per_seed


def headline_metrics(table) -> list[str]:
    """The headline metric columns of a comparison table (:data:`cellbridge.evaluate.HEADLINE_METRICS`)."""
    from .evaluate import HEADLINE_METRICS

    return [c for h in HEADLINE_METRICS for c in table.columns if c == h or c.startswith(f"{h}_")][:12]


# --------------------------------------------------------------------------- new data
def translate_query(
    model_path: PathLike, source: str, target: str, query: PathLike, output: PathLike
):
    """Reference -> query: translate newly prepared ``source`` cells with a saved model.

    ``query`` is a prepared AnnData of the source domain (same preprocessing as the
    reference); features are matched by name and a mismatch names the missing and extra
    features. Nothing is retrained.
    """
    from ._io import require_path
    from .model import CrossModalModel

    adata = read_h5ad(query, "query AnnData")
    model = CrossModalModel.load(require_path(model_path, "model folder"))
    try:
        out = model.translate(source, target, adata)
    except InputError as err:
        # these cells come from the query file, whatever raw input its uns records
        raise InputError(query, f"as {source!r} cells for this model: {err.problem}") from None
    write_h5ad(out, output)
    logger.info("translated %d %s cells into %s -> %s", adata.n_obs, source, target, output)
    return out


def generate_cells(
    model_path: PathLike,
    out_dir: PathLike,
    *,
    n: int,
    around: PathLike | None = None,
    domain: str | None = None,
    groupby: str | None = None,
    group: str | None = None,
    seed: int = 0,
) -> dict[str, Path]:
    """Sample ``n`` latent points (prior, or around a group's cells) and decode them into
    every domain; writes ``{domain}.h5ad`` per domain into ``out_dir``."""
    from ._io import require_path
    from .generate import generate, sample_latent
    from .model import CrossModalModel

    model = CrossModalModel.load(require_path(model_path, "model folder"))
    z_around = None
    if around is not None:
        if domain is None:
            raise InputError(around, "--domain is needed to encode the cells to sample around")
        cells = read_h5ad(around, "cells to sample around")
        if groupby is not None:
            if groupby not in cells.obs:
                raise InputError(around, f"obs has no column {groupby!r}")
            cells = cells[cells.obs[groupby].astype(str) == str(group)]
            if cells.n_obs < 2:
                raise InputError(around, f"fewer than 2 cells with {groupby} == {group!r}")
        z_around = model.get_latent(domain, cells)
    z = sample_latent(model, n, around=z_around, seed=seed)
    paths = {}
    for d, adata in generate(model, z).items():
        paths[d] = write_h5ad(adata, Path(out_dir) / f"{d}.h5ad")
    return paths


# --------------------------------------------------------------------------- rerun triggers
#: training options that change how a job runs, not what it computes: changing them
#: must not throw trained models away
_TRAINING_EXECUTION_KEYS = ("threads", "device", "checkpoint_every", "load_x")


@functools.cache
def _alignment_methods() -> tuple[str, ...]:
    """Every alignment method the schema knows (each may have its own ``alignment.<method>`` section)."""
    from .config import load_schema

    return tuple(load_schema()["properties"]["alignment"]["properties"]["methods"]["items"]["enum"])


def _canonical(value: Any) -> Any:
    """JSON-able ``value`` with integral floats as ints, so ``1`` and ``1.0`` digest alike."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def settings_digest(settings: Any) -> str:
    """A short hash of JSON-able ``settings`` that is stable across processes and key order.

    Parameters
    ----------
    settings
        The configuration a job depends on (see :func:`stage_settings`).

    Returns
    -------
    str
        16 hex digits; the workflow passes it as a rule's ``params`` so Snakemake's
        ``params`` rerun trigger reruns the job (and everything downstream) when it changes.
    """
    import hashlib
    import json

    blob = json.dumps(_canonical(settings), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def stage_settings(
    config: dict[str, Any], stage: str, *, domain: str | None = None, method: str | None = None
) -> dict[str, Any]:
    """The part of the configuration that one job of ``stage`` reads, beyond its input files.

    Everything a stage function above takes from ``config`` is listed here and nothing
    else, so a config change reruns exactly the jobs whose result it changes (their
    downstream jobs follow through their newer inputs). Settings that only decide which
    jobs exist (``alignment.methods``, ``seeds``, domain names) change the job list instead.

    Parameters
    ----------
    config
        Validated configuration.
    stage
        ``simulate``, ``import_scicar``, ``prepare`` (needs ``domain``), ``train`` (needs
        ``method``), ``translate``, ``evaluate``, ``plot_shift`` or ``plot_latents``.
    domain, method
        The job's wildcards.
    """
    align = config["alignment"]
    if stage == "simulate":
        # the demo's settings as before the crops simulator existed: its files stay current
        return dict(config["simulate"]) if simulates_crops(config) else _demo_simulation(config["simulate"])
    if stage == "import_scicar":
        return {k: v for k, v in config["scicar"].items() if k != "path"}  # the path is the input
    if stage == "prepare":
        dom = config["domains"][domain]
        return {
            # the domain's 'model' entry is the autoencoder's architecture: training only
            "domain": {k: v for k, v in dom.items() if k != "model"},
            "preprocess": config["preprocess"][dom["modality"]],
            # images are labelled through 'annotations', sequencing domains by label_key
            "label_key": None if dom["modality"] == "image" else config["label_key"],
        }
    if stage == "train":
        options = aligner_options(config, method)
        use_labels = uses_labels(config, method)
        # alignment keys not named here (the schedule, the correspondence prior, any added
        # later) count for every method, 'none' included: a prior may apply to it too
        handled = {"methods", "baseline", "weight", "labels", "anchors", *_alignment_methods()}
        return {
            "model": config["model"],
            "architectures": {d: dom["model"] for d, dom in config["domains"].items()},
            "training": {k: v for k, v in config["training"].items() if k not in _TRAINING_EXECUTION_KEYS},
            "aligner": options,
            "align_weight": alignment_weight(config, method),
            "alignment": {k: v for k, v in align.items() if k not in handled},
            # labels are off for 'none' unless alignment.labels.baseline (uses_labels)
            "labels": dict(align["labels"], label_key=config["label_key"]) if use_labels else None,
            "anchors": align["anchors"],
        }
    if stage == "translate":
        # labels and truth only annotate the galleries of image targets
        out = {"label_key": config["label_key"], "truth": config["truth"]} if image_pairs(config) else {}
        # translation.morphology decides X of image targets (chunk_cells changes nothing written);
        # named only when off, so that results made before the option keep their digest
        if not config["translation"]["morphology"] and any(d["modality"] == "image" for d in config["domains"].values()):
            out["morphology"] = False
        return out
    if stage == "evaluate":
        evaluation = {k: v for k, v in config["evaluation"].items() if k != "umap_max_cells"}  # the figure's
        return {"evaluation": evaluation, "label_key": config["label_key"], "truth": config["truth"]}
    if stage == "plot_shift":
        return {"label_key": config["label_key"], "max_cells": config["evaluation"]["max_cells"],
                "sample_seed": config["evaluation"]["sample_seed"]}
    if stage == "plot_latents":
        return {"label_key": config["label_key"], "truth": config["truth"],
                "umap_max_cells": config["evaluation"]["umap_max_cells"]}
    raise ValueError(f"no settings are defined for stage {stage!r}")
