"""Simulated scATAC-seq peak counts driven by the latent cell state.

Each peak has an opening probability that depends on the state (type-specific
enhancers, activation-responsive peaks with sigmoid responses, constitutive
promoter-like peaks and uninformative peaks). A cell's two alleles are each
captured with probability ``depth x opening``, so counts are 0, 1 or 2, very sparse,
and cells differ in sequencing depth (fraction of fragments captured) as in real data.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from .state import profiles_anndata

__all__ = ["peak_programs", "peak_open_probability", "simulate_atac"]

_PEAK_FRACTIONS = {"type": 0.22, "activation_up": 0.12, "activation_down": 0.06, "constitutive": 0.08}
#: Largest per-allele capture probability: even a fully open peak in a deep cell is missed sometimes.
_MAX_CAPTURE = 0.9


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def min_peaks(n_types: int) -> int:
    """Smallest ``n_peaks`` for which every program still gets peaks."""
    return 4 * n_types + 20


def _peak_names(n_peaks: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted, non-overlapping synthetic coordinates ``chrN:start-end`` (500 bp peaks)."""
    chrom = np.sort(rng.integers(1, 23, n_peaks))
    names = []
    for c in np.unique(chrom):
        k = int((chrom == c).sum())
        gaps = rng.integers(2_000, 400_000, k)
        starts = 10_000 + np.cumsum(gaps)
        names += [f"chr{c}:{s}-{s + 500}" for s in starts]
    return np.array(names)


def peak_programs(
    n_peaks: int,
    n_types: int,
    *,
    seed: int | np.random.Generator | np.random.SeedSequence | None = 0,
) -> pd.DataFrame:
    """Draw the peak programs and per-peak parameters.

    Parameters
    ----------
    n_peaks
        Number of peaks.
    n_types
        Number of cell types.
    seed
        Seed or generator for :func:`numpy.random.default_rng`.

    Returns
    -------
    pandas.DataFrame
        One row per peak (index: ``chrN:start-end``) with columns ``program``
        (``type``, ``activation_up``, ``activation_down``, ``constitutive`` or
        ``noise``), ``type`` (type code of type-specific peaks, else -1),
        ``baseline`` (logit of the opening probability), ``amplitude``, ``midpoint``
        and ``width`` (of the sigmoid activation response).
    """
    if n_peaks < min_peaks(n_types):
        raise ValueError(f"n_peaks must be at least {min_peaks(n_types)} for {n_types} types, got {n_peaks}")
    rng = np.random.default_rng(seed)
    sizes = {name: max(int(round(f * n_peaks)), 1) for name, f in _PEAK_FRACTIONS.items()}
    sizes["type"] = max(sizes["type"], 2 * n_types)
    sizes["noise"] = n_peaks - sum(sizes.values())
    program = np.concatenate([np.repeat(name, n) for name, n in sizes.items()])
    peaks = pd.DataFrame(
        {
            "program": program,
            "type": -1,
            "baseline": rng.normal(-2.0, 0.8, n_peaks),
            "amplitude": 0.0,
            "midpoint": 0.5,
            "width": 0.1,
        }
    )
    t = (peaks["program"] == "type").to_numpy()
    peaks.loc[t, "type"] = np.arange(t.sum()) % n_types
    peaks.loc[t, "baseline"] = rng.normal(-3.0, 0.6, t.sum())
    peaks.loc[t, "amplitude"] = rng.uniform(3.5, 5.5, t.sum())
    for name, sign in (("activation_up", 1.0), ("activation_down", -1.0)):
        g = (peaks["program"] == name).to_numpy()
        peaks.loc[g, "amplitude"] = sign * rng.uniform(2.0, 4.0, g.sum())
        peaks.loc[g, "midpoint"] = rng.uniform(0.2, 0.8, g.sum())
        peaks.loc[g, "width"] = rng.uniform(0.05, 0.2, g.sum())
        if sign < 0:  # closing peaks start open
            peaks.loc[g, "baseline"] += 2.5
    c = (peaks["program"] == "constitutive").to_numpy()
    peaks.loc[c, "baseline"] = rng.normal(1.5, 0.7, c.sum())

    order = rng.permutation(n_peaks)  # scatter programs along the genome
    peaks = peaks.iloc[order].reset_index(drop=True)
    peaks.index = pd.Index(_peak_names(n_peaks, rng), name="peak")
    return peaks


def peak_open_probability(states: pd.DataFrame, peaks: pd.DataFrame) -> np.ndarray:
    """Probability that each peak is open in each cell, ``(n_cells, n_peaks)``."""
    codes = states["cell_type"].cat.codes.to_numpy()[:, None]
    act = states["activation"].to_numpy()[:, None]
    program = peaks["program"].to_numpy()[None, :]
    amp = peaks["amplitude"].to_numpy()[None, :]
    logit = np.repeat(peaks["baseline"].to_numpy()[None, :], len(states), axis=0)
    logit += np.where((program == "type") & (codes == peaks["type"].to_numpy()[None, :]), amp, 0.0)
    response = _sigmoid((act - peaks["midpoint"].to_numpy()[None, :]) / peaks["width"].to_numpy()[None, :])
    logit += np.where(np.isin(program, ["activation_up", "activation_down"]), amp * response, 0.0)
    return _sigmoid(logit)


def simulate_atac(
    states: pd.DataFrame,
    *,
    n_peaks: int = 1000,
    median_depth: float = 0.18,
    depth_sdlog: float = 0.5,
    seed: int | np.random.Generator | np.random.SeedSequence | None = 0,
) -> ad.AnnData:
    """Simulate peak counts in {0, 1, 2} for the cells in ``states``.

    Parameters
    ----------
    states
        Output of :func:`~cellbridge.simulate.simulate_states`.
    n_peaks
        Number of peaks.
    median_depth
        Median per-allele capture probability of an open peak (sets sparsity).
    depth_sdlog
        Standard deviation of the log capture depth across cells.
    seed
        Seed or generator for :func:`numpy.random.default_rng`.

    Returns
    -------
    anndata.AnnData
        Cells in the order of ``states``, ``obs_names`` ``atac_<cell_id>``; ``X`` CSR
        float32 counts in {0, 1, 2}; ``obs["cell_type"]``, ``obs["split"]``;
        ``var["sim_program"]`` and ``var["sim_type"]`` (generating program and, for
        type-specific peaks, the type; for evaluation only).
    """
    if not 0 < median_depth < 1 or depth_sdlog < 0:
        raise ValueError("median_depth must be in (0, 1) and depth_sdlog >= 0")
    rng = np.random.default_rng(seed)
    n_types = len(states["cell_type"].cat.categories)
    peaks = peak_programs(n_peaks, n_types, seed=rng)
    depth = median_depth * np.exp(depth_sdlog * rng.standard_normal(len(states)))
    capture = np.minimum(depth[:, None] * peak_open_probability(states, peaks), _MAX_CAPTURE)
    counts = rng.binomial(2, capture)

    return profiles_anndata(counts, states, peaks, prefix="atac", simulation={
        "modality": "atac",
        "n_peaks": int(n_peaks),
        "median_depth": float(median_depth),
        "depth_sdlog": float(depth_sdlog),
    })
