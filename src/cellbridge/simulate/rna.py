"""Simulated scRNA-seq UMI counts driven by the latent cell state.

Gene expression is built from programs, each a block of genes with its own
response to the state:

``marker``
    up in one cell type (sometimes also, more weakly, in a second type);
``activation_up`` / ``activation_down``
    gene-specific sigmoid responses to ``activation`` (midpoint and steepness vary,
    so the program is non-linear and not one gene-set score);
``interaction``
    respond to activation in one cell type only;
``cell_cycle``
    follow the RNA-only nuisance score;
``housekeeping``
    highly and stably expressed, low dispersion;
``mito``
    the 13 mitochondrial genes (``MT-...``) so that mito QC works;
``noise``
    no relation to the state.

Counts are negative binomial (gamma-Poisson) around ``library size x expression
proportion`` with gene-specific dispersion and log-normal library sizes, which
gives realistic sparsity (most entries zero) and overdispersion.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from .state import profiles_anndata

__all__ = ["MITO_GENES", "gene_programs", "rna_expression_proportions", "simulate_rna"]

#: The 13 protein-coding mitochondrial genes, in the human naming convention.
MITO_GENES = (
    "MT-ND1", "MT-ND2", "MT-CO1", "MT-CO2", "MT-ATP8", "MT-ATP6", "MT-CO3",
    "MT-ND3", "MT-ND4L", "MT-ND4", "MT-ND5", "MT-ND6", "MT-CYB",
)  # fmt: skip

#: Fraction of the non-mitochondrial genes in each state-driven program; the rest
#: are pure-noise genes.
_PROGRAM_FRACTIONS = {
    "marker": 0.10,
    "activation_up": 0.08,
    "activation_down": 0.06,
    "interaction": 0.04,
    "cell_cycle": 0.03,
    "housekeeping": 0.04,
}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _program_sizes(n_other: int, n_types: int) -> dict[str, int]:
    sizes = {name: int(round(frac * n_other)) for name, frac in _PROGRAM_FRACTIONS.items()}
    # Every type needs its own markers and interaction genes.
    sizes["marker"] = max(sizes["marker"], 2 * n_types)
    sizes["interaction"] = max(sizes["interaction"], n_types)
    sizes["noise"] = n_other - sum(sizes.values())
    return sizes


def min_genes(n_types: int) -> int:
    """Smallest ``n_genes`` for which every program still gets genes."""
    return len(MITO_GENES) + 6 * n_types + 40


def gene_programs(
    n_genes: int,
    n_types: int,
    *,
    seed: int | np.random.Generator | np.random.SeedSequence | None = 0,
) -> pd.DataFrame:
    """Draw the gene programs and per-gene parameters.

    Parameters
    ----------
    n_genes
        Total number of genes, including the 13 mitochondrial genes.
    n_types
        Number of cell types.
    seed
        Seed or generator for :func:`numpy.random.default_rng`.

    Returns
    -------
    pandas.DataFrame
        One row per gene (index: gene names, ``Gene0001`` ... and ``MT-...``, in
        shuffled order) with columns ``program``, ``type`` (type code for marker and
        interaction genes, else -1), ``secondary_type`` (-1 if none), ``baseline``
        (log relative abundance), ``amplitude`` (log fold change of the response),
        ``midpoint`` and ``width`` (of the sigmoid activation response) and ``theta``
        (negative-binomial inverse dispersion; variance = mean + mean**2 / theta).
    """
    if n_genes < min_genes(n_types):
        raise ValueError(f"n_genes must be at least {min_genes(n_types)} for {n_types} types, got {n_genes}")
    rng = np.random.default_rng(seed)
    n_other = n_genes - len(MITO_GENES)
    sizes = _program_sizes(n_other, n_types)
    program = np.concatenate([np.repeat(name, n) for name, n in sizes.items()] + [np.repeat("mito", len(MITO_GENES))])
    n = program.size
    genes = pd.DataFrame(
        {
            "program": program,
            "type": -1,
            "secondary_type": -1,
            "baseline": rng.normal(0.0, 1.3, n),
            "amplitude": 0.0,
            "midpoint": 0.5,
            "width": 0.1,
            "theta": np.exp(rng.normal(np.log(6.0), 0.4, n)),
        }
    )
    is_ = {name: (genes["program"] == name).to_numpy() for name in [*sizes, "mito"]}

    # Markers: cycle through the types so each gets the same number; a minority are
    # shared (more weakly) with a second type, as real markers often are.
    m = is_["marker"]
    types = np.arange(m.sum()) % n_types
    genes.loc[m, "type"] = types
    shared = rng.random(m.sum()) < 0.3
    other = (types + rng.integers(1, n_types, m.sum())) % n_types
    genes.loc[m, "secondary_type"] = np.where(shared, other, -1)
    genes.loc[m, "amplitude"] = rng.gamma(6.0, 2.2 / 6.0, m.sum())
    genes.loc[m, "baseline"] = rng.normal(-1.0, 1.1, m.sum())

    for name, sign in (("activation_up", 1.0), ("activation_down", -1.0), ("interaction", 1.0)):
        g = is_[name]
        genes.loc[g, "amplitude"] = sign * rng.uniform(1.5, 3.0, g.sum())
        genes.loc[g, "midpoint"] = rng.uniform(0.15, 0.85, g.sum())
        genes.loc[g, "width"] = rng.uniform(0.05, 0.2, g.sum())
    # Down genes start high so that switching off is visible in the counts.
    genes.loc[is_["activation_down"], "baseline"] += 1.0
    genes.loc[is_["interaction"], "type"] = np.arange(is_["interaction"].sum()) % n_types
    genes.loc[is_["interaction"], "amplitude"] += 0.5
    genes.loc[is_["cell_cycle"], "amplitude"] = rng.uniform(1.5, 3.0, is_["cell_cycle"].sum())

    # Pure-noise genes span the whole abundance range, mostly lowly expressed.
    genes.loc[is_["noise"], "baseline"] = np.maximum(rng.normal(-3.0, 1.8, is_["noise"].sum()), -5.5)
    # Housekeeping genes (ribosomal-protein-like) take a large share of the UMIs, which
    # is what makes the rest of a real count matrix so sparse.
    hk = is_["housekeeping"]
    genes.loc[hk, "baseline"] = rng.normal(4.0, 0.8, hk.sum())
    genes.loc[hk, "theta"] = np.exp(rng.normal(np.log(15.0), 0.5, hk.sum()))
    mt = is_["mito"]
    genes.loc[mt, "baseline"] = rng.normal(3.3, 0.4, mt.sum())
    genes.loc[mt, "theta"] = np.exp(rng.normal(np.log(20.0), 0.3, mt.sum()))

    width = len(str(n_other))
    names = np.array([f"Gene{i + 1:0{max(4, width)}d}" for i in range(n_other)] + list(MITO_GENES))
    order = rng.permutation(n)  # interleave programs along the gene axis
    genes = genes.iloc[order].reset_index(drop=True)
    genes.index = pd.Index(names[order], name="gene")
    return genes


def rna_expression_proportions(
    states: pd.DataFrame,
    genes: pd.DataFrame,
    *,
    type_offsets: np.ndarray | None = None,
) -> np.ndarray:
    """Expected fraction of each cell's UMIs going to each gene (rows sum to 1).

    Parameters
    ----------
    states
        Output of :func:`~cellbridge.simulate.simulate_states`.
    genes
        Output of :func:`gene_programs`.
    type_offsets
        Optional ``(n_types, n_genes)`` small log-scale shifts applied to every
        gene of a type (broad, non-marker differences between types).

    Returns
    -------
    numpy.ndarray
        ``(n_cells, n_genes)`` float64 proportions.
    """
    codes = states["cell_type"].cat.codes.to_numpy()
    act = states["activation"].to_numpy()[:, None]
    cycle = states["cell_cycle"].to_numpy()[:, None]
    program = genes["program"].to_numpy()
    gtype = genes["type"].to_numpy()
    amp = genes["amplitude"].to_numpy()[None, :]

    log_rate = np.repeat(genes["baseline"].to_numpy()[None, :], len(states), axis=0)
    if type_offsets is not None:
        log_rate += type_offsets[codes]

    marker = program == "marker"
    own = codes[:, None] == gtype[None, :]
    second = codes[:, None] == genes["secondary_type"].to_numpy()[None, :]
    log_rate += np.where(marker[None, :], amp * (own + 0.5 * second), 0.0)

    response = _sigmoid((act - genes["midpoint"].to_numpy()[None, :]) / genes["width"].to_numpy()[None, :])
    is_activation = np.isin(program, ["activation_up", "activation_down"])
    log_rate += np.where(is_activation[None, :], amp * response, 0.0)
    log_rate += np.where((program == "interaction")[None, :] & own, amp * response, 0.0)
    log_rate += np.where((program == "cell_cycle")[None, :], amp * cycle, 0.0)

    log_rate -= log_rate.max(axis=1, keepdims=True)  # numerical safety before exp
    rate = np.exp(log_rate)
    return rate / rate.sum(axis=1, keepdims=True)


def _library_sizes(
    states: pd.DataFrame, median: float, sdlog: float, rng: np.random.Generator
) -> np.ndarray:
    """Log-normal library sizes; activated cells carry somewhat more RNA."""
    act = states["activation"].to_numpy()
    log_size = np.log(median) + sdlog * rng.standard_normal(len(states)) + 0.3 * (act - 0.5)
    return np.maximum(np.exp(log_size), 300.0)


def sample_negative_binomial(
    mean: np.ndarray, theta: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Negative-binomial counts as a gamma-Poisson mixture (variance ``mean + mean**2/theta``)."""
    return rng.poisson(rng.gamma(theta, mean / theta))


def simulate_rna(
    states: pd.DataFrame,
    *,
    n_genes: int = 2000,
    median_library_size: float = 4500.0,
    library_size_sdlog: float = 0.45,
    seed: int | np.random.Generator | np.random.SeedSequence | None = 0,
) -> ad.AnnData:
    """Simulate UMI counts for the cells in ``states``.

    Parameters
    ----------
    states
        Output of :func:`~cellbridge.simulate.simulate_states`.
    n_genes
        Number of genes, including 13 mitochondrial genes.
    median_library_size
        Median UMIs per cell.
    library_size_sdlog
        Standard deviation of the log library size.
    seed
        Seed or generator for :func:`numpy.random.default_rng`.

    Returns
    -------
    anndata.AnnData
        Cells in the order of ``states``, ``obs_names`` ``rna_<cell_id>``; ``X`` CSR
        float32 holding integer counts; ``obs["cell_type"]``, ``obs["split"]``;
        ``var["sim_program"]`` and ``var["sim_type"]`` (the generating program of each
        gene and, for marker and interaction genes, its cell type; for evaluation only).
    """
    if median_library_size <= 0 or library_size_sdlog < 0:
        raise ValueError("median_library_size must be > 0 and library_size_sdlog >= 0")
    rng = np.random.default_rng(seed)
    n_types = len(states["cell_type"].cat.categories)
    genes = gene_programs(n_genes, n_types, seed=rng)
    # Broad type differences across the whole transcriptome, except the stable genes.
    stable = genes["program"].isin(["housekeeping", "mito"]).to_numpy()
    type_offsets = np.where(stable[None, :], 0.0, rng.normal(0.0, 0.2, (n_types, n_genes)))
    props = rna_expression_proportions(states, genes, type_offsets=type_offsets)
    # Per-cell mitochondrial load varies (metabolic state, handling), as in real QC.
    mito = (genes["program"] == "mito").to_numpy()
    props[:, mito] *= np.exp(rng.normal(0.0, 0.3, (len(states), 1)))
    props /= props.sum(axis=1, keepdims=True)

    mean = props * _library_sizes(states, median_library_size, library_size_sdlog, rng)[:, None]
    counts = sample_negative_binomial(mean, genes["theta"].to_numpy()[None, :], rng)

    return profiles_anndata(counts, states, genes, prefix="rna", simulation={
        "modality": "rna",
        "n_genes": int(n_genes),
        "median_library_size": float(median_library_size),
        "library_size_sdlog": float(library_size_sdlog),
    })
