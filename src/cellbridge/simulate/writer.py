"""Write the demo: jointly simulated cells, saved as if they were unpaired domains.

Each domain is written in its own independently shuffled cell order, so row ``i``
of ``rna.h5ad`` is not the cell of row ``i`` in ``atac.h5ad`` nor the ``i``-th
imaged nucleus. ``truth.tsv`` holds the pairing and the latent state; training must
never read it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from .._io import atomic_path, logger, write_h5ad, write_table
from .atac import min_peaks, simulate_atac
from .imaging import ImageSimulation, simulate_images
from .rna import min_genes, simulate_rna
from .state import simulate_states

__all__ = ["build_truth_table", "image_label_table", "simulate_demo"]

TRUTH_COLUMNS = [
    "cell_id", "domain", "obs_name", "source_file", "label",
    "centroid_y", "centroid_x", "cell_type", "activation", "split",
]  # fmt: skip
IMAGE_LABEL_COLUMNS = ["source_file", "label", "centroid_y", "centroid_x", "cell_type", "split"]
_FIELD_NAME = re.compile(r"^field_\d+\.tif$")


def _check_positive_int(name: str, value: int, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _validate_demo_args(
    n_cells: int, n_genes: int, n_peaks: int, n_types: int, atac: bool,
    field_size: int, nuclei_per_field: int, test_fraction: float,
) -> None:  # fmt: skip
    """Check every argument before anything is written, so bad input leaves no partial output."""
    _check_positive_int("n_types", n_types, 2)
    _check_positive_int("n_cells", n_cells, n_types)
    _check_positive_int("n_genes", n_genes, min_genes(n_types))
    if atac:
        _check_positive_int("n_peaks", n_peaks, min_peaks(n_types))
    _check_positive_int("field_size", field_size, 64)
    _check_positive_int("nuclei_per_field", nuclei_per_field, 1)
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction!r}")


def field_file_names(n_fields: int) -> list[str]:
    """File names ``field_000.tif`` ... (zero-padded to at least three digits)."""
    width = max(3, len(str(n_fields - 1)))
    return [f"field_{i:0{width}d}.tif" for i in range(n_fields)]


def image_label_table(states: pd.DataFrame, images: ImageSimulation, file_names: list[str]) -> pd.DataFrame:
    """Per-nucleus annotation a user could have: field file, mask label, centroid, type, split.

    Rows follow the fields and labels in order; indexed by ``cell_id`` (not written).
    """
    nuc = images.nuclei
    table = pd.DataFrame(
        {
            "source_file": np.asarray(file_names)[nuc["field"].to_numpy()],
            "label": nuc["label"].to_numpy(),
            "centroid_y": nuc["centroid_y"].to_numpy(),
            "centroid_x": nuc["centroid_x"].to_numpy(),
            "cell_type": states.loc[nuc.index, "cell_type"].astype(str).to_numpy(),
            "split": states.loc[nuc.index, "split"].astype(str).to_numpy(),
        },
        index=nuc.index,
    )
    return table


def build_truth_table(
    states: pd.DataFrame,
    *,
    sequencing: dict[str, pd.Series],
    image_labels: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per profile: which cell each sequencing row and imaged nucleus came from.

    Parameters
    ----------
    states
        Output of :func:`~cellbridge.simulate.simulate_states`.
    sequencing
        Domain name -> the ``cell_id`` of every written profile, indexed by its obs name,
        in file order.
    image_labels
        Output of :func:`image_label_table`.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TRUTH_COLUMNS`; sequencing rows leave ``source_file``, ``label``
        and the centroids empty, image rows leave ``obs_name`` empty.
    """
    parts = []
    for domain, ids in sequencing.items():
        parts.append(pd.DataFrame({"cell_id": ids.to_numpy(), "domain": domain, "obs_name": ids.index.to_numpy()}))
    if image_labels is not None:
        img = image_labels[["source_file", "label", "centroid_y", "centroid_x"]].copy()
        img.insert(0, "cell_id", image_labels.index.to_numpy())
        img.insert(1, "domain", "image")
        parts.append(img)
    # without image_labels (ready crops named like profiles) the image columns stay empty
    truth = pd.concat(parts, ignore_index=True).reindex(columns=TRUTH_COLUMNS)
    truth["label"] = truth["label"].astype("Int64")
    state = states.loc[truth["cell_id"]]
    truth["cell_type"] = state["cell_type"].astype(str).to_numpy()
    truth["activation"] = state["activation"].to_numpy()
    truth["split"] = state["split"].astype(str).to_numpy()
    return truth.reindex(columns=TRUTH_COLUMNS)


def _anonymise(adata, domain: str) -> pd.Series:
    """Rename profiles ``<domain>_00000`` ... in file order; return their cell ids.

    The simulators name profiles after their cell; written like that, the obs names of
    two domains would reveal the pairing that training must not see.
    """
    cell_ids = adata.obs_names.str.removeprefix(f"{domain}_").to_numpy()
    adata.obs_names = [f"{domain}_{i:05d}" for i in range(adata.n_obs)]
    return pd.Series(cell_ids, index=adata.obs_names.copy(), name="cell_id")


def _write_tiff(array: np.ndarray, path: Path, *, compress: bool) -> Path:
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, array, photometric="minisblack", compression="zlib" if compress else None)
    return path


def _write_tiff_series(arrays: list[np.ndarray], folder: Path, names: list[str], *, compress: bool) -> None:
    """Write one TIFF per array and remove ``field_*.tif`` left over from an earlier, larger run."""
    folder.mkdir(parents=True, exist_ok=True)
    for array, name in zip(arrays, names, strict=True):
        _write_tiff(array, folder / name, compress=compress)
    keep = set(names)
    for stale in folder.iterdir():
        if _FIELD_NAME.match(stale.name) and stale.name not in keep:
            stale.unlink()


def simulate_demo(
    out_dir: str | os.PathLike,
    *,
    n_cells: int = 2000,
    n_genes: int = 2000,
    n_peaks: int = 1000,
    n_types: int = 5,
    atac: bool = True,
    field_size: int = 256,
    nuclei_per_field: int = 8,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, Path]:
    """Simulate jointly measured cells and write them as unpaired RNA, ATAC and image domains.

    Parameters
    ----------
    out_dir
        Output folder (created if needed). Every file is written atomically.
    n_cells
        Number of cells; every cell appears once in every domain.
    n_genes
        Number of genes (including 13 ``MT-`` genes).
    n_peaks
        Number of ATAC peaks.
    n_types
        Number of cell types (at least 2).
    atac
        Also simulate and write the ATAC domain.
    field_size
        Side of a square microscopy field (px, at least 64).
    nuclei_per_field
        Largest number of nuclei per field.
    test_fraction
        Fraction of cell ids held out for evaluation (the same ids in every domain).
    seed
        Random seed; the same seed gives identical files.

    Returns
    -------
    dict of str to pathlib.Path
        ``"rna"``, ``"atac"`` (only when ``atac``), ``"fields"`` and ``"masks"``
        (folders), ``"truth"``, ``"image_labels"``.
    """
    _validate_demo_args(n_cells, n_genes, n_peaks, n_types, atac, field_size, nuclei_per_field, test_fraction)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Independent streams per component: turning ATAC off does not change the RNA or images.
    s_state, s_rna, s_atac, s_img, s_order = np.random.SeedSequence(seed).spawn(5)
    order_rng = np.random.default_rng(s_order)
    states = simulate_states(n_cells, n_types=n_types, test_fraction=test_fraction, seed=s_state)
    orders = {d: order_rng.permutation(n_cells) for d in ("rna", "atac", "image")}

    paths: dict[str, Path] = {}
    rna = simulate_rna(states.iloc[orders["rna"]], n_genes=n_genes, seed=s_rna)
    sequencing = {"rna": _anonymise(rna, "rna")}
    paths["rna"] = write_h5ad(rna, out / "rna.h5ad")
    if atac:
        atac_data = simulate_atac(states.iloc[orders["atac"]], n_peaks=n_peaks, seed=s_atac)
        sequencing["atac"] = _anonymise(atac_data, "atac")
        paths["atac"] = write_h5ad(atac_data, out / "atac.h5ad")

    images = simulate_images(
        states.iloc[orders["image"]], field_size=field_size, nuclei_per_field=nuclei_per_field, seed=s_img
    )
    names = field_file_names(len(images.fields))
    _write_tiff_series(images.fields, out / "fields", names, compress=False)
    _write_tiff_series(images.masks, out / "masks", names, compress=True)
    paths["fields"], paths["masks"] = out / "fields", out / "masks"

    labels = image_label_table(states, images, names)
    paths["image_labels"] = write_table(labels[IMAGE_LABEL_COLUMNS], out / "image_labels.tsv", index=False)
    truth = build_truth_table(states, sequencing=sequencing, image_labels=labels)
    paths["truth"] = write_table(truth, out / "truth.tsv", index=False)
    logger.info(
        "simulated %d cells (%d types) into %s: %d fields of %d px", n_cells, n_types, out, len(names), field_size
    )
    return paths
