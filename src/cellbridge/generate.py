"""Generation from the shared latent space: sampling and the latent-shift ("attribute vector") trick.

Because every domain's decoder reads the same latent space, a point sampled there (or a
cell moved within it) can be decoded into *every* domain at once: the transcriptome and
the nucleus that belong to the same hypothetical cell.
"""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd

from .model import CrossModalModel


def sample_latent(
    model: CrossModalModel, n: int, *, around: np.ndarray | None = None, seed: int = 0
) -> np.ndarray:
    """Draw ``n`` latent points.

    Parameters
    ----------
    model
        A trained model.
    n
        Number of points.
    around
        Latents of a group of cells (e.g. one label's cells): sample from a Gaussian
        with their mean and covariance. Without it, a variational model samples its
        prior N(0, I); a deterministic autoencoder has no prior, so ``around`` is then
        required.
    seed
        Random seed.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    d = model.config["latent_dim"]
    if around is None:
        if not model.config["variational"]:
            raise ValueError(
                "a deterministic autoencoder has no prior to sample: pass around= (latents of "
                "the cells to sample near), or train with variational=True"
            )
        return rng.standard_normal((n, d)).astype(np.float32)
    around = np.asarray(around, dtype=np.float64)
    if around.ndim != 2 or around.shape[1] != d or len(around) < 2:
        raise ValueError(f"around must have shape (n >= 2, {d}), got {around.shape}")
    cov = np.cov(around, rowvar=False) + 1e-6 * np.eye(d)
    return rng.multivariate_normal(around.mean(axis=0), cov, size=n).astype(np.float32)


def generate(
    model: CrossModalModel, z: np.ndarray, *, domains: Sequence[str] | None = None
) -> dict[str, ad.AnnData]:
    """Decode latent points into every (or the given) domain."""
    obs = pd.DataFrame(index=pd.Index([f"generated_{i}" for i in range(len(z))]))
    return {d: model.decode(d, z, obs=obs) for d in (domains or model.domains)}


def latent_shift(
    model: CrossModalModel,
    domain: str,
    *,
    groupby: str,
    source: str,
    target: str,
    adata: ad.AnnData | None = None,
    domains: Sequence[str] | None = None,
) -> tuple[dict[str, ad.AnnData], dict[str, ad.AnnData], np.ndarray]:
    """Move ``source`` cells by the difference of the two groups' latent means; decode both.

    The "attribute vector" of Yang et al.: ``shift = mean(z[target]) - mean(z[source])``
    is added to every ``source`` cell's latent; decoding before and after in every
    domain shows the change the model predicts, e.g. how a nucleus would look if the cell
    moved from one state to another.

    Returns
    -------
    before, after
        Domain -> decoded AnnData of the ``source`` cells, without and with the shift.
    shift
        The latent shift vector.
    """
    data = adata if adata is not None else model.adatas[domain]
    if groupby not in data.obs:
        raise KeyError(f"obs has no column {groupby!r}; columns: {list(data.obs.columns)}")
    groups = data.obs[groupby].astype(str).to_numpy()
    missing = [g for g in (source, target) if g not in set(groups)]
    if missing:
        raise ValueError(f"group(s) {missing} not found in obs[{groupby!r}] ({sorted(set(groups))})")
    z = model.get_latent(domain, data)
    shift = z[groups == target].mean(axis=0) - z[groups == source].mean(axis=0)
    z_src = z[groups == source]
    obs = data.obs.loc[groups == source]
    before = {d: model.decode(d, z_src, obs=obs) for d in (domains or model.domains)}
    after = {d: model.decode(d, z_src + shift, obs=obs) for d in (domains or model.domains)}
    return before, after, shift


def shift_features(decoded: dict[str, ad.AnnData]) -> dict[str, np.ndarray]:
    """What to draw per domain: predicted crops for image domains, ``X`` otherwise."""
    out = {}
    for d, a in decoded.items():
        out[d] = np.asarray(a.obsm["image"]) if "image" in a.obsm else np.asarray(a.X)
    return out
