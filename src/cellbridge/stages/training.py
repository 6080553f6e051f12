"""The train stage: methods and their options from the config, the model built and trained, latents written."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._io import InputError, write_h5ad
from ..contract import LATENT_KEY
from .paths import PathLike, checkpoint_dir, model_dir
from .preparation import read_prepared

logger = logging.getLogger("cellbridge")


# --------------------------------------------------------------------------- training
def methods(config: dict[str, Any]) -> list[str]:
    """Alignment methods to train: the configured ones plus the 'none' baseline."""
    out = list(config["alignment"]["methods"])
    if config["alignment"]["baseline"] and "none" not in out:
        out.append("none")
    return out


def _anchors(config: dict[str, Any]):
    table = config["alignment"]["anchors"]["table"]
    if table is None:
        return None
    import csv

    import pandas as pd

    from .._io import require_path

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
    from ..model import CrossModalModel

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

    from ..plotting import plot_history

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
        if "latent_pull" in model.config.get("correspondence", {}):
            latent.uns["cellbridge"]["latent_pull"] = dict(model.config["correspondence"]["latent_pull"])
        write_h5ad(latent, out / f"{domain}.h5ad")
    logger.info("trained %s (seed %s): %d epochs -> %s", method, seed, len(model.history), out)
    return model
