"""Latent cell states shared by every simulated modality.

Each simulated cell has a discrete cell type, a continuous activation program in
``[0, 1]`` and a cell-cycle score that only the transcriptome sees (a nuisance
variable an integration method should not need to align). The same table drives
the RNA, ATAC and imaging simulators, which is what gives the demo its ground truth.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["default_type_proportions", "profiles_anndata", "simulate_states", "type_names"]

#: Ratio between the proportions of consecutive cell types; 0.75 gives
#: 0.33/0.25/0.18/0.14/0.10 for five types.
_PROPORTION_RATIO = 0.75
#: Concentration of the per-type Beta distributions of activation. Small values
#: make activation broad within a type, so the types overlap along the program.
_ACTIVATION_CONCENTRATION = 4.0
#: Fraction of cells that are cycling (high cell-cycle score).
_CYCLING_FRACTION = 0.25


def type_names(n_types: int) -> list[str]:
    """Return the cell-type names ``T0 .. T{n_types-1}``."""
    return [f"T{k}" for k in range(n_types)]


def default_type_proportions(n_types: int) -> np.ndarray:
    """Unequal, geometrically decreasing cell-type proportions.

    Unequal proportions are realistic and give an unpaired alignment method
    something to anchor on (a symmetric mixture can be aligned with types swapped).

    Parameters
    ----------
    n_types
        Number of cell types (at least 2).

    Returns
    -------
    numpy.ndarray
        Proportions summing to 1, largest first.
    """
    if n_types < 2:
        raise ValueError(f"n_types must be at least 2, got {n_types}")
    weights = _PROPORTION_RATIO ** np.arange(n_types)
    return weights / weights.sum()


def _exact_type_counts(n_cells: int, proportions: np.ndarray) -> np.ndarray:
    """Split ``n_cells`` into per-type counts by largest remainder, at least one per type.

    Exact counts (instead of a multinomial draw) keep the proportions stable for
    small demos, and every type is present so every later stage sees all of them.
    """
    raw = proportions * n_cells
    counts = np.floor(raw).astype(int)
    remainder = n_cells - counts.sum()
    counts[np.argsort(-(raw - counts), kind="stable")[:remainder]] += 1
    # Move cells from the largest types to empty ones (only matters for tiny n_cells).
    for k in np.flatnonzero(counts == 0):
        counts[np.argmax(counts)] -= 1
        counts[k] = 1
    return counts


def _type_activation_means(n_types: int, rng: np.random.Generator) -> np.ndarray:
    """Mean activation of each type: evenly spread over [0.3, 0.7] in random order."""
    return rng.permutation(np.linspace(0.3, 0.7, n_types))


def _cell_cycle_scores(n_cells: int, rng: np.random.Generator) -> np.ndarray:
    """Cell-cycle score: most cells near 0, a cycling minority spread over (0.4, 1)."""
    cycling = rng.random(n_cells) < _CYCLING_FRACTION
    return np.where(cycling, rng.uniform(0.4, 1.0, n_cells), rng.beta(1.0, 12.0, n_cells))


def _cell_ids(n_cells: int) -> np.ndarray:
    width = max(5, len(str(n_cells - 1)))
    return np.array([f"c{i:0{width}d}" for i in range(n_cells)])


def simulate_states(
    n_cells: int,
    *,
    n_types: int = 5,
    proportions: np.ndarray | list[float] | None = None,
    test_fraction: float = 0.2,
    seed: int | np.random.Generator | np.random.SeedSequence | None = 0,
) -> pd.DataFrame:
    """Draw the latent state of ``n_cells`` cells.

    Parameters
    ----------
    n_cells
        Number of cells (at least ``n_types``).
    n_types
        Number of discrete cell types (at least 2).
    proportions
        Cell-type proportions; by default :func:`default_type_proportions`.
    test_fraction
        Fraction of cells held out for evaluation, in ``[0, 1)``. The same cell ids
        are held out in every simulated domain.
    seed
        Seed or generator for :func:`numpy.random.default_rng`.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``cell_id`` (``c00000`` ...), with columns ``cell_type``
        (categorical ``T0`` ...), ``activation`` (in ``[0, 1]``, type-dependent Beta
        distribution), ``cell_cycle`` (in ``[0, 1]``, RNA-only nuisance) and ``split``
        (``"train"``/``"test"``).
    """
    if n_types < 2:
        raise ValueError(f"n_types must be at least 2, got {n_types}")
    if n_cells < n_types:
        raise ValueError(f"n_cells ({n_cells}) must be at least n_types ({n_types})")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if proportions is None:
        proportions = default_type_proportions(n_types)
    proportions = np.asarray(proportions, dtype=float)
    if proportions.shape != (n_types,) or np.any(proportions <= 0):
        raise ValueError(f"proportions must be {n_types} positive numbers, got {proportions.tolist()}")
    proportions = proportions / proportions.sum()

    rng = np.random.default_rng(seed)
    codes = rng.permutation(np.repeat(np.arange(n_types), _exact_type_counts(n_cells, proportions)))
    means = _type_activation_means(n_types, rng)[codes]
    c = _ACTIVATION_CONCENTRATION
    activation = rng.beta(means * c, (1.0 - means) * c)
    cycle = _cell_cycle_scores(n_cells, rng)

    split = np.full(n_cells, "train", dtype=object)
    n_test = int(round(test_fraction * n_cells))
    split[rng.choice(n_cells, size=n_test, replace=False)] = "test"

    names = type_names(n_types)
    states = pd.DataFrame(
        {
            "cell_type": pd.Categorical.from_codes(codes, categories=names),
            "activation": activation,
            "cell_cycle": cycle,
            "split": pd.Categorical(split, categories=["train", "test"]),
        },
        index=pd.Index(_cell_ids(n_cells), name="cell_id"),
    )
    return states


def profiles_anndata(
    counts: np.ndarray, states: pd.DataFrame, features: pd.DataFrame, *, prefix: str, simulation: dict
):
    """Simulated sequencing profiles as AnnData (shared by the RNA and ATAC simulators).

    ``obs``: ``cell_type`` and ``split`` of each cell, named ``<prefix>_<cell id>``;
    ``var``: the generating ``sim_program`` and ``sim_type`` of each feature (truth, for
    evaluation only); ``X``: the counts as CSR float32; ``uns["simulation"]``: the parameters.
    """
    import anndata as ad
    from scipy import sparse

    obs = pd.DataFrame(
        {"cell_type": states["cell_type"].to_numpy(), "split": states["split"].to_numpy()},
        index=pd.Index(f"{prefix}_" + states.index.astype(str), name=None),
    )
    type_names = np.asarray(states["cell_type"].cat.categories, dtype=object)
    feature_type = features["type"].to_numpy()
    var = pd.DataFrame(
        {
            "sim_program": pd.Categorical(features["program"]),
            "sim_type": np.where(feature_type >= 0, type_names[np.maximum(feature_type, 0)], ""),
        },
        index=features.index.rename(None),
    )
    adata = ad.AnnData(X=sparse.csr_matrix(counts.astype(np.float32)), obs=obs, var=var)
    adata.uns["simulation"] = simulation
    return adata
