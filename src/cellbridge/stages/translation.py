"""The translate stage (chunked, atomic files), galleries of predicted nuclei, and translating or generating new cells."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .._io import InputError, read_h5ad, write_h5ad
from .paths import PathLike, model_dir, prepared_path, translated_path, truth_path
from .preparation import training_layers

logger = logging.getLogger("cellbridge")


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
    from ..truth import read_truth

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
    from ..model import CrossModalModel

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

    from .._io import as_rows

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

    from .._io import _quiet_h5py_cleanup, atomic_path

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

    from ..evaluate import held_out_mask, sample_rows

    held = np.flatnonzero(held_out_mask(adata)[0])
    return cell_rows(adata, held[sample_rows(held.size, max_cells, seed=0, key="gallery")])


def plot_gallery(translated, source, target, path: PathLike, *, truth=None, label_key=None, title="", n=12):
    """Gallery of held-out cells: source cell, predicted nucleus, measured nucleus (if paired)."""
    import numpy as np

    from ..evaluate import held_out_mask
    from ..plotting import plot_image_gallery
    from ..truth import cell_ids_for, paired_indices

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


# --------------------------------------------------------------------------- new data
def translate_query(
    model_path: PathLike, source: str, target: str, query: PathLike, output: PathLike
):
    """Reference -> query: translate newly prepared ``source`` cells with a saved model.

    ``query`` is a prepared AnnData of the source domain (same preprocessing as the
    reference); features are matched by name and a mismatch names the missing and extra
    features. Nothing is retrained.
    """
    from .._io import require_path
    from ..model import CrossModalModel

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
    from .._io import require_path
    from ..generate import generate, sample_latent
    from ..model import CrossModalModel

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
