"""Small seeded synthetic domains for the model tests.

Every cell has a shared latent state (a cluster -- its cell type -- plus a
continuous activation) that is pushed through random nonlinear maps into

* an RNA-like domain: negative-binomial-ish counts, ``X = log1p(CP10k)``;
* an image domain: one blurred elliptical nucleus per crop whose size, brightness
  and elongation follow the latent state;
* an ATAC-like domain: Bernoulli accessibility with a few counts per open peak.

Domains share the latent states cell by cell (``<domain>_<i>`` is cell ``i``),
so tests can check alignment with known partners although the model never sees
the pairing.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


def latent_states(n_cells: int, *, n_types: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cell types and a 3-d latent state per cell (cluster centre + activation direction)."""
    rng = np.random.default_rng(seed)
    types = rng.integers(0, n_types, n_cells)
    centres = rng.normal(0, 2.0, (n_types, 3))
    activation = rng.uniform(0, 1, n_cells)
    state = centres[types] + activation[:, None] * np.array([1.5, -1.0, 0.5]) + rng.normal(0, 0.25, (n_cells, 3))
    return types, state


def _random_map(state: np.ndarray, n_out: int, rng: np.random.Generator) -> np.ndarray:
    w1 = rng.normal(0, 1, (state.shape[1], 16))
    w2 = rng.normal(0, 1, (16, n_out)) / 2
    return np.tanh(state @ w1) @ w2


def _uns(modality: str, name: str, **params) -> dict:
    return {"cellbridge": {"modality": modality, "domain": name, "params": params, "source": f"synthetic:{name}", "version": "test"}}


def _obs(name: str, types: np.ndarray, split: np.ndarray | None) -> pd.DataFrame:
    obs = pd.DataFrame(index=[f"{name}_{i}" for i in range(len(types))])
    obs["domain"] = pd.Categorical([name] * len(types))
    obs["cell_type"] = pd.Categorical([f"type{t}" for t in types])
    if split is not None:
        obs["split"] = split
    return obs


def make_rna(types, state, *, n_genes: int = 60, seed: int = 1, name: str = "rna", split=None) -> ad.AnnData:
    """RNA-like domain with raw counts in ``layers["counts"]`` and log1p(CP10k) in ``X``."""
    rng = np.random.default_rng(seed)
    logits = _random_map(state, n_genes, rng) * 2.0 + rng.normal(0, 0.5, n_genes)
    prop = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    library = rng.lognormal(np.log(2000), 0.3, len(types))
    mean = prop * library[:, None]
    # gamma-Poisson with inverse dispersion 10
    counts = rng.poisson(rng.gamma(10.0, mean / 10.0)).astype(np.float32)
    counts[counts.sum(1) == 0, 0] = 1
    x = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4).astype(np.float32)
    adata = ad.AnnData(
        X=x, obs=_obs(name, types, split), var=pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)]),
        uns=_uns("rna", name, target_sum=1e4),
    )
    adata.layers["counts"] = sp.csr_matrix(counts)
    adata.obs["total_counts"] = counts.sum(1)
    return adata


def make_image(types, state, *, image_size: int = 32, seed: int = 2, name: str = "image", split=None) -> ad.AnnData:
    """Image domain: one blurred elliptical blob per crop, morphology features in ``X``."""
    rng = np.random.default_rng(seed)
    h = _random_map(state, 3, rng)
    sig = 1 / (1 + np.exp(-h))
    radius = image_size * (0.12 + 0.22 * sig[:, 0])
    brightness = 0.35 + 0.6 * sig[:, 1]
    elong = 1.0 + 0.8 * sig[:, 2]
    yy, xx = np.mgrid[:image_size, :image_size] - (image_size - 1) / 2
    r2 = (xx[None] / (radius[:, None, None] * elong[:, None, None])) ** 2 + (yy[None] / radius[:, None, None]) ** 2
    img = brightness[:, None, None] / (1 + np.exp((np.sqrt(r2) - 1) * 8))
    img = np.clip(img + rng.normal(0, 0.02, img.shape) * (img > 0.05), 0, 1).astype(np.float32)
    area = (img > 0.5 * brightness[:, None, None]).sum((1, 2))
    feats = np.stack([area, img.sum((1, 2)) / np.maximum(area, 1), elong], 1).astype(np.float32)
    adata = ad.AnnData(
        X=feats, obs=_obs(name, types, split), var=pd.DataFrame(index=["area", "mean_intensity", "elongation"]),
        uns=_uns("image", name, crop_size=image_size),
    )
    adata.obsm["image"] = img
    return adata


def make_atac(types, state, *, n_peaks: int = 80, seed: int = 3, name: str = "atac", split=None) -> ad.AnnData:
    """ATAC-like domain: ``layers["binary"]``, ``layers["counts"]`` and a TF-IDF-like ``X``."""
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-(_random_map(state, n_peaks, rng) * 3 - 1)))
    binary = (rng.uniform(size=p.shape) < p).astype(np.float32)
    counts = binary * (1 + rng.poisson(0.5, p.shape))
    tf = binary / np.maximum(binary.sum(1, keepdims=True), 1)
    idf = np.log1p(len(types) / (1 + binary.sum(0)))
    adata = ad.AnnData(
        X=sp.csr_matrix((tf * idf * 100).astype(np.float32)), obs=_obs(name, types, split),
        var=pd.DataFrame(index=[f"peak{j}" for j in range(n_peaks)]), uns=_uns("atac", name),
    )
    adata.layers["counts"] = sp.csr_matrix(counts.astype(np.float32))
    adata.layers["binary"] = sp.csr_matrix(binary)
    return adata


def make_domains(
    n_cells: int = 240,
    *,
    modalities: tuple[str, ...] = ("rna", "image"),
    n_types: int = 3,
    image_size: int = 32,
    test_fraction: float = 0.0,
    seed: int = 0,
) -> dict[str, ad.AnnData]:
    """Paired synthetic domains keyed by modality name (cell ``i`` shares its latent state)."""
    types, state = latent_states(n_cells, n_types=n_types, seed=seed)
    split = None
    if test_fraction > 0:
        rng = np.random.default_rng(seed + 100)
        split = np.where(rng.uniform(size=n_cells) < test_fraction, "test", "train")
    makers = {
        "rna": lambda: make_rna(types, state, seed=seed + 1, split=split),
        "image": lambda: make_image(types, state, image_size=image_size, seed=seed + 2, split=split),
        "atac": lambda: make_atac(types, state, seed=seed + 3, split=split),
    }
    return {m: makers[m]() for m in modalities}


#: small architectures that keep model tests fast on a CPU
FAST_DOMAIN_KWARGS = {
    "rna": {"hidden_dims": [32], "dropout": 0.0, "input_dropout": 0.0},
    "atac": {"hidden_dims": [32]},
    "image": {"hidden_dims": [32], "conv_channels": [4, 8], "dropout": 0.0},
}


#: a cheap geometric correspondence prior (one neighbourhood size, coarser entropy) for tests
#: that train with the prior on (``correspondence="auto"``, unsupervised) but do not test the
#: prior itself: the package default (3 restarts x 4 k, eps 0.005) costs many times a tiny
#: model's training on a CPU; the prior's own behaviour is tested in tests/test_geometry.py
FAST_PRIOR = {"k_grid": [10], "epsilon": 0.02, "n_restarts": 1}


def fast_model(adatas, **kwargs):
    """A :class:`~cellbridge.CrossModalModel` with tiny layers (for tests).

    The correspondence prior stays as ``correspondence`` resolves it (on for unsupervised
    aligned training), computed with :data:`FAST_PRIOR` unless ``correspondence_kwargs`` is given.
    """
    from cellbridge.model import CrossModalModel

    kwargs.setdefault("correspondence_kwargs", dict(FAST_PRIOR))

    domain_kwargs = {k: dict(FAST_DOMAIN_KWARGS[k]) for k in adatas if k in FAST_DOMAIN_KWARGS}
    for name, opts in kwargs.pop("domain_kwargs", {}).items():
        domain_kwargs.setdefault(name, {}).update(opts)
    kwargs.setdefault("latent_dim", 4)
    return CrossModalModel(adatas, domain_kwargs=domain_kwargs, **kwargs)


#: training options for short test runs
FAST_TRAIN = {"batch_size": 32, "warmup_epochs": 0, "ramp_epochs": 0, "progress": False}
