"""User-facing model: :class:`CrossModalModel`.

The same object serves notebooks and the workflow::

    model = CrossModalModel({"rna": rna, "image": img}, alignment="wasserstein", label_key="cell_type")
    history = model.train(max_epochs=60)
    z = model.get_latent("image", key_added="X_cellbridge")
    pred = model.translate("image", "rna")          # AnnData in RNA's prepared space
    model.save("model/")
    model = CrossModalModel.load("model/", adatas={"rna": rna, "image": img})

A saved model is a folder with ``model.pt`` (a plain ``state_dict`` of tensors,
loadable with ``torch.load(..., weights_only=True)``), ``config.json`` (the full
model configuration, feature names per domain, the preprocessing parameters from
``uns["cellbridge"]`` and the package version) and, once trained, ``history.tsv``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import torch

from ._io import InputError, atomic_path, load_tensors, write_json, write_table
from .align import LabelClassifier, get_aligner
from .contract import LATENT_KEY, domain_modality, domain_params, image_size_of, package_version
from .data import DomainData, estimate_x_scale, label_categories, mean_feature_variance
from .nn.autoencoder import CrossModalModule, DomainAutoencoder, architecture_options
from .nn.likelihoods import likelihood_target, resolve_likelihood
from .sampling import SamplerFactory, check_label_supervision, default_sampler
from .training import (
    MAX_STEPS_PER_EPOCH,
    REFERENCE_BATCH_SIZE,
    AnchorSet,
    Callback,
    Trainer,
    TrainingPlan,
    auto_batch_size,
    resolve_device,
    scaled_lr,
)

logger = logging.getLogger("cellbridge")

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.tsv"

#: What computing the correspondence prior adds to ``config["correspondence"]`` (results, not settings)
PRIOR_OUTPUTS = ("candidates", "seconds", "latent_pull")

#: Modalities whose prepared ``X`` is non-negative by contract (docs/design.md): RNA is
#: log1p-normalised, ATAC a TF-IDF of 0/1 values. Predictions in their ``X`` space are
#: clipped at 0 (a Gaussian decoder can undershoot); protein CLR and features can be negative.
NONNEGATIVE_X = frozenset({"rna", "atac"})


class CrossModalModel:
    """Per-domain autoencoders sharing one latent space, aligned without paired cells.

    Parameters
    ----------
    adatas
        Prepared domains by name (``docs/design.md``: modality in
        ``uns["cellbridge"]["modality"]``; features in ``X``; raw counts in
        ``layers["counts"]``; crops in ``obsm["image"]`` for images).
    latent_dim
        Size of the shared latent space.
    alignment
        ``"adversarial"``, ``"wasserstein"``, ``"mmd"`` or ``"none"`` (see
        :mod:`cellbridge.align`).
    alignment_kwargs
        Options of the aligner, e.g. ``{"reg": 0.05, "unbalanced": True}`` for
        ``wasserstein`` or ``{"conditional": True}`` for ``adversarial``.
    variational
        Variational autoencoders (the latent reported at inference is the mean).
    kl_weight
        Weight of the KL term of variational autoencoders.
    label_key
        obs column with labels shared across domains (e.g. cell types); a label
        classifier on the latent is trained on cells whose label is known
        (missing values are ignored).
    anchors
        Known pairs: a DataFrame whose columns are domain names and whose rows
        hold the ``obs_names`` of the same cell in those domains (missing
        values allowed). The anchor loss pulls partners together.
    anchor_fraction
        Fraction of the anchor rows used (chosen at random by ``seed``).
    correspondence
        Geometric correspondence prior (:mod:`cellbridge.geometry`): ``"gw"``
        computes a Gromov-Wasserstein coupling between the first domain and each
        other one from their own neighbourhood structure, selected among several
        landmark sets and neighbourhood sizes without truth, and training pulls the
        pairs it links together (``prior_weight`` of :meth:`train`); ``"none"``: no prior;
        ``"auto"`` (default): ``"gw"`` for every aligner except ``"none"`` when
        training is not label-supervised (``label_key`` is None).
    correspondence_kwargs
        Options of :func:`cellbridge.geometry.correspondence_priors`
        (``n_landmarks``, ``k_grid``, ``epsilon``, ``max_cells``, ``n_restarts``).
    domain_kwargs
        Per-domain options: ``likelihood`` (``"auto"`` or a name from
        :data:`~cellbridge.nn.LIKELIHOODS_BY_MODALITY`) and architecture options
        ``hidden_dims``, ``dropout``, ``norm`` (``"batch"``/``"layer"``/``"none"``),
        ``input_dropout`` (vector domains), ``conv_channels`` (images),
        ``learn_scale`` (Gaussian likelihood).
    seed
        Seed of weight initialisation, validation split and minibatch order.
    device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ...

    Raises
    ------
    InputError
        When a domain breaks the prepared-domain contract (the message names the
        domain and the problem).
    """

    def __init__(
        self,
        adatas: Mapping[str, ad.AnnData],
        *,
        latent_dim: int = 16,
        alignment: str = "wasserstein",
        alignment_kwargs: Mapping[str, Any] | None = None,
        variational: bool = False,
        kl_weight: float = 1e-3,
        label_key: str | None = None,
        anchors: pd.DataFrame | None = None,
        anchor_fraction: float = 1.0,
        correspondence: str = "auto",
        correspondence_kwargs: Mapping[str, Any] | None = None,
        domain_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        seed: int = 0,
        device: str | torch.device = "auto",
    ):
        if not adatas:
            raise InputError(None, "CrossModalModel needs at least one domain")
        domain_kwargs = dict(domain_kwargs or {})
        unknown = set(domain_kwargs) - set(adatas)
        if unknown:
            raise InputError(None, f"domain_kwargs names unknown domain(s) {sorted(unknown)}; domains are {list(adatas)}")
        labels = label_categories(adatas, label_key) if label_key is not None else []
        domains = {
            name: self._domain_config(name, adata, domain_kwargs.get(name, {})) for name, adata in adatas.items()
        }
        self.config: dict[str, Any] = {
            "latent_dim": int(latent_dim),
            "alignment": alignment,
            "alignment_kwargs": dict(alignment_kwargs or {}),
            "variational": bool(variational),
            "kl_weight": float(kl_weight),
            "label_key": label_key,
            "labels": labels,
            "seed": int(seed),
            "domains": domains,
            "correspondence": _correspondence_config(
                correspondence, correspondence_kwargs, alignment, len(adatas), supervised=bool(labels)
            ),
        }
        self.adatas: dict[str, ad.AnnData] = dict(adatas)
        self.data: dict[str, DomainData] = {
            name: self._register(name, adata, check_features=False) for name, adata in adatas.items()
        }
        self._estimate_data_constants()
        # built once the config is complete: the module is a function of the config alone
        # (what load() rebuilds it from), never patched after
        self.device = resolve_device(device)
        self.module = build_module(self.config).to(self.device)
        self.anchors = anchor_sets(anchors, self.data, fraction=anchor_fraction, seed=seed) if anchors is not None else []
        self.history: pd.DataFrame | None = None
        #: batch size and learning rate of the last :meth:`train` (``batch_size="auto"`` resolved)
        self.training_settings: dict[str, Any] | None = None
        self.priors: list | None = None
        self.path: Path | None = None  # the folder last saved to or loaded from

    # ------------------------------------------------------------ set-up
    @staticmethod
    def _domain_config(name: str, adata: ad.AnnData, options: Mapping[str, Any]) -> dict[str, Any]:
        """JSON-able description of one domain: modality, likelihood, features, architecture."""
        if not isinstance(adata, ad.AnnData):
            raise InputError(f"domain {name!r}", f"expected an AnnData, got {type(adata).__name__}")
        modality = domain_modality(adata, name)
        opts = dict(options)
        try:
            likelihood = resolve_likelihood(opts.pop("likelihood", "auto"), modality)
            architecture = architecture_options(modality, opts)
        except ValueError as err:
            raise InputError(f"domain {name!r}", str(err)) from None
        is_image = modality == "image"
        return {
            "modality": modality,
            "likelihood": likelihood,
            "features": [] if is_image else [str(v) for v in adata.var_names],
            "image_size": image_size_of(adata, name) if is_image else 0,
            "params": domain_params(adata),
            "architecture": architecture,
            # data-derived constants of count likelihoods, filled once the data is registered
            "x_scale": None,
            "default_library": None,
            "variance": None,
        }

    def _register(self, name: str, adata: ad.AnnData, *, check_features: bool = True) -> DomainData:
        cfg = self.config["domains"][name]
        modality = domain_modality(adata, name)
        if modality != cfg["modality"]:
            raise InputError(f"domain {name!r}", f"has modality {modality!r} but the model's domain is {cfg['modality']!r}")
        if modality == "image" and image_size_of(adata, name) != cfg["image_size"]:
            raise InputError(
                f"domain {name!r}",
                f'obsm["image"] crops are {image_size_of(adata, name)} px but the model was built for {cfg["image_size"]} px',
            )
        return DomainData.from_anndata(
            adata,
            name,
            likelihood_target=likelihood_target(cfg["likelihood"], modality),
            features=cfg["features"] if check_features and modality != "image" else None,
            label_key=self.config["label_key"],
            label_categories=self.config["labels"],
        )

    def _estimate_data_constants(self) -> None:
        """Likelihood constants estimated from the registered data, recorded in the domains' config."""
        for name, data in self.data.items():
            cfg = self.config["domains"][name]
            if cfg["likelihood"] in ("gaussian", "mse"):
                target = data.targets[likelihood_target(cfg["likelihood"], cfg["modality"])]
                cfg["variance"] = mean_feature_variance(target, rows=data.training_cells())
            if cfg["likelihood"] != "nb":
                continue
            scale = estimate_x_scale(data.inputs)
            if not math.isfinite(scale):
                scale = float(cfg["params"].get("target_sum", 1e4))
                logger.warning(
                    "domain %r: X is not log1p-normalised; NB predictions use log1p(proportion * %g)", name, scale
                )
            cfg["x_scale"] = scale
            cfg["default_library"] = float(np.median(data.library))

    # ------------------------------------------------------------ helpers
    @property
    def domains(self) -> list[str]:
        """Domain names in model order."""
        return list(self.config["domains"])

    def _check_domain(self, name: str) -> None:
        if name not in self.config["domains"]:
            raise KeyError(f"unknown domain {name!r}; the model knows {self.domains}")

    def _data_for(self, name: str, adata: ad.AnnData | None) -> tuple[DomainData, ad.AnnData]:
        self._check_domain(name)
        if adata is None:
            if name not in self.data:
                raise InputError(f"domain {name!r}", "no data registered with the model; pass adata=")
            return self.data[name], self.adatas[name]
        return self._register(name, adata), adata

    def __repr__(self) -> str:
        doms = ", ".join(
            f"{n}: {c['modality']}/{c['likelihood']}" + (f" ({self.data[n].n_obs} cells)" if n in self.data else "")
            for n, c in self.config["domains"].items()
        )
        state = "trained" if self.history is not None else "untrained"
        return f"CrossModalModel({doms}; latent_dim={self.config['latent_dim']}, alignment={self.config['alignment']!r}, {state})"

    # ------------------------------------------------------------ training
    def train(
        self,
        *,
        max_epochs: int = TrainingPlan.max_epochs,
        batch_size: int | str = "auto",
        lr: float = TrainingPlan.lr,
        weight_decay: float = TrainingPlan.weight_decay,
        critic_lr: float | None = TrainingPlan.critic_lr,
        warmup_epochs: int = TrainingPlan.warmup_epochs,
        ramp_epochs: int = TrainingPlan.ramp_epochs,
        align_weight: float = TrainingPlan.align_weight,
        align_schedule: str = TrainingPlan.align_schedule,
        label_weight: float = TrainingPlan.label_weight,
        label_smoothing: float = TrainingPlan.label_smoothing,
        match_label_batches: bool = TrainingPlan.match_label_batches,
        anchor_weight: float = TrainingPlan.anchor_weight,
        prior_weight: float = TrainingPlan.prior_weight,
        validation_fraction: float = TrainingPlan.validation_fraction,
        early_stopping_patience: int | None = TrainingPlan.early_stopping_patience,
        min_delta: float = TrainingPlan.min_delta,
        grad_clip: float | None = TrainingPlan.grad_clip,
        use_test_cells: bool = TrainingPlan.use_test_cells,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 5,
        resume: bool = True,
        progress: bool = True,
        callbacks: Sequence[Callback] = (),
        sampler: SamplerFactory = default_sampler,
    ) -> pd.DataFrame:
        """Train all autoencoders jointly with the alignment loss.

        Parameters
        ----------
        max_epochs
            Epochs; an epoch is enough steps to see the largest domain once.
        batch_size
            Cells per domain per step, or ``"auto"``: 128 up to 262,144 training cells in
            the largest domain, larger beyond (:func:`~cellbridge.training.auto_batch_size`),
            with ``lr`` then scaled by sqrt(batch / 128)
            (:func:`~cellbridge.training.scaled_lr`). The size and rate used are logged
            and kept in :attr:`training_settings`.
        lr, weight_decay
            Adam options of the autoencoders (and label head); with ``batch_size="auto"``
            ``lr`` is the rate for 128-cell batches.
        critic_lr
            Learning rate of an adversarial discriminator (default ``lr / 4``:
            a slower discriminator keeps the adversarial game stable).
        warmup_epochs
            Epochs in which the autoencoders train without the alignment loss
            (label and anchor supervision are on from the start). Warm-up and ramp
            count epochs of at most 128 optimiser steps: on large data a pass over
            the cells counts as several (:data:`~cellbridge.training.SCHEDULE_EPOCH_STEPS`).
        ramp_epochs, align_schedule
            ``"linear"``: the alignment weight grows from 0 to ``align_weight``
            over ``ramp_epochs`` after warm-up; ``"constant"``: full weight right
            after warm-up.
        align_weight, label_weight, anchor_weight
            Weights of the alignment loss, the label classifier and the anchors.
        prior_weight
            Weight of the correspondence loss that pulls the pairs linked by the
            geometric prior together (see ``correspondence``); on from the first
            epoch, like the anchors.
        label_smoothing
            Label smoothing of the label classifier's cross-entropy, in [0, 1):
            it stops the classifier from pushing cell types ever further apart,
            which would flatten the structure within each type (see
            :meth:`cellbridge.align.LabelClassifier.loss`).
        match_label_batches
            Draw every domain's minibatch with the same label counts as the first
            domain's (when every domain has labels; see
            :class:`~cellbridge.sampling.LabelMatchedSampler`), so the alignment
            loss compares batches of equal composition.
        validation_fraction
            Held-out fraction of each domain's training cells.
        early_stopping_patience
            Stop after this many epochs without a better ``val_loss`` once the
            ramp is over (``None``: train all epochs); the best weights are restored.
        min_delta
            Minimum decrease of ``val_loss`` that counts as better.
        grad_clip
            Maximum global gradient norm (``None``: no clipping).
        use_test_cells
            Also train on cells with ``obs["split"] == "test"`` (held out by default).
        checkpoint_dir, checkpoint_every, resume
            Write ``checkpoint.pt`` every ``checkpoint_every`` epochs; with
            ``resume`` continue from an existing one.
        progress
            Show a progress bar.
        callbacks
            ``callback(epoch, row)`` after each epoch.
        sampler
            Builds the minibatch sampler from the :class:`~cellbridge.training.Trainer`
            (default :func:`~cellbridge.sampling.default_sampler`); for benchmarks and
            experiments, e.g. an epoch capped at a number of steps.

        Returns
        -------
        pandas.DataFrame
            One row per epoch (also kept as :attr:`history`): every loss term
            per domain, ``align``, ``discriminator_acc`` (adversarial),
            ``label_loss``/``label_acc``, validation losses, ``val_loss`` and ``seconds``.
        """
        if not self.data or set(self.data) != set(self.domains):
            missing = sorted(set(self.domains) - set(self.data))
            raise InputError(None, f"training needs data for every domain; missing {missing} (pass adatas= to load)")
        batch_size, lr = self._batch_and_lr(batch_size, lr, validation_fraction=validation_fraction, use_test_cells=use_test_cells)
        plan = TrainingPlan(
            max_epochs=max_epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, critic_lr=critic_lr,
            warmup_epochs=warmup_epochs, ramp_epochs=ramp_epochs, align_weight=align_weight,
            align_schedule=align_schedule, label_weight=label_weight, label_smoothing=label_smoothing,
            match_label_batches=match_label_batches, anchor_weight=anchor_weight, prior_weight=prior_weight,
            kl_weight=self.config["kl_weight"],
            validation_fraction=validation_fraction,
            early_stopping_patience=early_stopping_patience, min_delta=min_delta, grad_clip=grad_clip,
            use_test_cells=use_test_cells, seed=self.config["seed"],
        )
        check_label_supervision(self.data, self.config["label_key"], self.config["labels"], use_test_cells=use_test_cells)
        priors = self.correspondence_priors(use_test_cells=use_test_cells) if prior_weight > 0 else []
        trainer = Trainer(
            self.module, self.data, plan, anchors=self.anchors, priors=priors, device=self.device, fingerprint=self._settings(),
            checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, resume=resume, progress=progress,
            callbacks=callbacks, sampler=sampler,
        )
        self.history = trainer.fit()
        if priors:
            self._record_latent_pull(priors)
        return self.history

    def _record_latent_pull(self, priors: Sequence[Any]) -> None:
        """How closely the trained latent keeps each prior's pairs together
        (:meth:`~cellbridge.geometry.CorrespondencePrior.latent_pull`; 0 best, about 1 ignored),
        in ``config["correspondence"]["latent_pull"]`` per domain pair. It uses no truth: on
        PBMC it ranked five training seeds from one prior by their label transfer, but not
        three from another, nor scNMT-seq's seeds (README), so it is reported, not used."""
        latents = {name: self.get_latent(name) for name in self.domains}
        pulls = {f"{p.domain_a}-{p.domain_b}": round(p.latent_pull(latents[p.domain_a], latents[p.domain_b]), 6) for p in priors}
        self.config["correspondence"]["latent_pull"] = pulls
        logger.info("trained latent against the correspondence prior (pair / independent squared distance): %s", pulls)

    def _batch_and_lr(self, batch_size: int | str, lr: float, *, validation_fraction: float, use_test_cells: bool) -> tuple[int, float]:
        """Resolve ``batch_size="auto"`` (and its learning rate) from the largest domain's training cells."""
        if batch_size != "auto":
            if isinstance(batch_size, str):
                raise ValueError(f"batch_size must be an integer or 'auto', got {batch_size!r}")
            self.training_settings = {"batch_size": int(batch_size), "lr": float(lr), "rule": "given"}
            return int(batch_size), float(lr)
        largest = max(len(d.training_cells(use_test_cells=use_test_cells)) for d in self.data.values())
        n_train = int(largest * (1.0 - validation_fraction))
        batch = auto_batch_size(n_train)
        rate = scaled_lr(lr, batch)
        self.training_settings = {"batch_size": batch, "lr": rate, "rule": "auto", "training_cells": n_train}
        if batch != REFERENCE_BATCH_SIZE:
            logger.info("batch_size auto: %d cells per step for %d training cells (at most %d steps per epoch); "
                        "lr %g x sqrt(%d / %d) = %g", batch, n_train, MAX_STEPS_PER_EPOCH, lr, batch, REFERENCE_BATCH_SIZE, rate)
        return batch, rate

    def _settings(self) -> dict[str, Any]:
        """The config without what training measured (the prior's candidates and seconds):
        the checkpoint fingerprint, so that a resumed run is recognised as the same run."""
        out = dict(self.config)
        if "correspondence" in out:
            out["correspondence"] = {k: v for k, v in out["correspondence"].items() if k not in PRIOR_OUTPUTS}
        return out

    def correspondence_priors(self, *, use_test_cells: bool = False) -> list:
        """The geometric correspondence priors of this model's data (computed once, then cached).

        The candidates tried and the one chosen (feature scaling ``view``, landmark restart,
        neighbourhood size, GW value, distortion under the view's common yardstick, the
        view's joint distortion, the distortion on every view's landmarks by which the kept
        view's candidate is chosen, disagreement with the other candidates) are recorded in
        ``config["correspondence"]["candidates"]`` and the time spent in
        ``config["correspondence"]["seconds"]``, saved with the model.
        """
        from .geometry import DEFAULT_SCALINGS, correspondence_priors, representations

        options = dict(self.config.get("correspondence") or {"method": "none"})
        if options.pop("method") != "gw":
            return []
        for key in PRIOR_OUTPUTS:
            options.pop(key, None)
        if self.priors is None:
            t0 = time.perf_counter()
            scalings = options.pop("scalings", DEFAULT_SCALINGS)
            per_domain = {
                name: representations(self.adatas[name], modality=self.config["domains"][name]["modality"], scalings=scalings)
                for name in self.domains
            }
            reps = {scaling: {name: per_domain[name][scaling] for name in self.domains} for scaling in scalings}
            cells = {name: self.data[name].training_cells(use_test_cells=use_test_cells) for name in self.domains}
            options.setdefault("seed", self.config["seed"])  # the prior's randomness is part of the run's
            self.priors = correspondence_priors(reps, cells, label_codes=self._label_codes(), **options)
            self.config["correspondence"]["candidates"] = [row for p in self.priors for row in p.candidates]
            # the prior's cost beside the history's per-epoch seconds (issue 16: <= 2x training)
            self.config["correspondence"]["seconds"] = round(time.perf_counter() - t0, 3)
        return self.priors

    def _label_codes(self) -> dict[str, np.ndarray] | None:
        """Label codes per domain when every domain has labels (they make the prior label-aware)."""
        if self.config["label_key"] is None or any(self.data[n].labels is None for n in self.domains):
            return None
        return {n: np.asarray(self.data[n].labels) for n in self.domains}

    # ------------------------------------------------------------ inference
    @torch.no_grad()
    def _latent(self, name: str, data: DomainData, batch_size: int) -> torch.Tensor:
        self.module.eval()
        ae = self.module.autoencoders[name]
        out = []
        for start in range(0, data.n_obs, batch_size):
            idx = np.arange(start, min(start + batch_size, data.n_obs))
            out.append(ae.encode(data.batch(idx, self.device, with_targets=False))[0])
        return torch.cat(out)

    def get_latent(
        self, domain: str, adata: ad.AnnData | None = None, *, key_added: str | None = None, batch_size: int = 1024
    ) -> np.ndarray:
        """Latent coordinates (encoder means) of a domain's cells.

        Parameters
        ----------
        domain
            Domain name.
        adata
            Cells to encode (features matched by name); default: the registered data.
        key_added
            If given, also store the latent in ``adata.obsm[key_added]``
            (e.g. ``"X_cellbridge"``).
        batch_size
            Cells per forward pass.
        """
        data, target = self._data_for(domain, adata)
        z = self._latent(domain, data, batch_size).cpu().numpy()
        if key_added is not None:
            target.obsm[key_added] = z
        return z

    def translate(
        self,
        source: str,
        target: str,
        adata: ad.AnnData | None = None,
        *,
        library_size: float | None = None,
        batch_size: int = 1024,
        morphology: bool = True,
    ) -> ad.AnnData:
        """Encode cells of ``source`` and decode them as ``target`` cells.

        Parameters
        ----------
        source, target
            Domain names.
        adata
            Source cells; default: the registered source data.
        library_size
            Library size for the expected counts of count likelihoods (default:
            the median of the target's training cells).
        batch_size
            Cells per forward pass.
        morphology
            Image targets: measure the morphology features of the predicted crops
            (about 0.25 ms per crop, most of a bulk translation's time); ``False``
            leaves ``X`` with no features and keeps only the crops.

        Returns
        -------
        anndata.AnnData
            ``obs``: the source cells (``obs_names`` and columns kept), with
            ``obs["domain"]`` = ``target`` (the space of the values, as in
            ``uns["cellbridge"]["domain"]``) and ``obs["source_domain"]`` =
            ``source``; ``uns["cellbridge"]["translation"]``: source, target,
            method, seed, model_path, version, time (UTC);
            ``obsm["X_cellbridge"]``: their latent;
            vector targets: ``X`` = predicted features in the target's prepared
            space (clipped at 0 for the modalities in :data:`NONNEGATIVE_X`) and
            ``var`` = the target's features, plus
            ``layers["expected_counts"]`` (negative binomial) or
            ``layers["probability"]`` (Bernoulli); image targets:
            ``obsm["image"]`` = predicted crops and ``X`` = their morphology
            features (the imaging preprocessing's features, see :meth:`decode`).
        """
        self._check_domain(target)
        data, src = self._data_for(source, adata)
        z = self._latent(source, data, batch_size)
        out = self.decode(target, z, obs=src.obs, library_size=library_size, batch_size=batch_size, morphology=morphology)
        # rows are the source cells, values live in the target's space: obs["domain"] names
        # that space (as uns["cellbridge"]["domain"] does), obs["source_domain"] the cells' origin
        out.obs["source_domain"] = pd.Categorical([source] * out.n_obs)
        out.obs["domain"] = pd.Categorical([target] * out.n_obs)
        out.uns["cellbridge"]["translation"] = self._provenance(source, target, out.uns["cellbridge"])
        return out

    def _provenance(self, source: str, target: str, meta: Mapping[str, Any]) -> dict[str, Any]:
        """``uns["cellbridge"]["translation"]``: what made a translated AnnData (h5ad-storable)."""
        from datetime import UTC, datetime

        info = {
            "source": source,
            "target": target,
            "method": str(self.config["alignment"]),
            "seed": int(self.config["seed"]),
            "model_path": str(self.path) if self.path is not None else "not saved",
            "version": package_version(),
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if "x_clipped_at" in meta:
            info["x_clipped_at"] = meta["x_clipped_at"]
            info["n_clipped"] = meta["n_clipped"]
        return info

    def decode(
        self,
        target: str,
        z: np.ndarray | torch.Tensor,
        *,
        obs: pd.DataFrame | None = None,
        library_size: float | None = None,
        batch_size: int = 1024,
        morphology: bool = True,
    ) -> ad.AnnData:
        """Decode latent points into ``target``'s prepared space.

        Used by :meth:`translate` (latents of encoded cells) and by generation
        (:mod:`cellbridge.generate`: latents sampled or shifted in the latent space).
        Image targets get the predicted crops in ``obsm["image"]`` and, in ``X``, the
        morphology features measured on them with the same function and parameters
        as the imaging preprocessing, so predicted and measured nuclei compare directly.

        Parameters
        ----------
        target
            Domain to decode into.
        z
            ``(n, latent_dim)`` latent points.
        obs
            Row annotations of the result (default: ``latent_0 ...`` names).
        library_size, batch_size, morphology
            As in :meth:`translate`.
        """
        self._check_domain(target)
        self.module.eval()
        z = torch.as_tensor(np.asarray(z) if not torch.is_tensor(z) else z, dtype=torch.float32, device=self.device)
        if z.ndim != 2 or z.shape[1] != self.config["latent_dim"]:
            raise ValueError(f"z must have shape (n, {self.config['latent_dim']}), got {tuple(z.shape)}")
        ae: DomainAutoencoder = self.module.autoencoders[target]
        preds: dict[str, list[np.ndarray]] = {}
        with torch.no_grad():
            for start in range(0, len(z), batch_size):
                zb = z[start : start + batch_size]
                lib = torch.full((len(zb),), float(library_size), device=self.device) if library_size else None
                for key, val in ae.predict(zb, library=lib).items():
                    preds.setdefault(key, []).append(val.cpu().numpy().astype(np.float32))
        pred = {k: np.concatenate(v) for k, v in preds.items()}
        cfg = self.config["domains"][target]
        if obs is None:
            obs = pd.DataFrame(index=pd.Index([f"latent_{i}" for i in range(len(z))]))
        if cfg["modality"] == "image":
            crops = pred.pop("image")
            if morphology:
                feats = _crop_morphology(crops, cfg["params"], index=obs.index)
            else:
                feats = pd.DataFrame(index=obs.index, columns=pd.Index([], dtype=str))
            out = ad.AnnData(X=feats.to_numpy(np.float32), obs=obs.copy(), var=pd.DataFrame(index=feats.columns))
            out.obsm["image"] = crops
        else:
            x = pred.pop("x")
            if cfg["modality"] in NONNEGATIVE_X:
                n_clipped = int((x < 0).sum())
                np.maximum(x, 0.0, out=x)
            out = ad.AnnData(X=x, obs=obs.copy(), var=self._target_var(target))
        out.obsm[LATENT_KEY] = z.cpu().numpy()
        for key, val in pred.items():
            out.layers[key] = val
        out.uns["cellbridge"] = {
            "modality": cfg["modality"],
            "domain": target,
            "params": cfg["params"],
            "version": package_version(),
        }
        if cfg["modality"] in NONNEGATIVE_X:
            # the prepared X of this modality is >= 0; a Gaussian decoder can undershoot
            out.uns["cellbridge"]["x_clipped_at"] = 0.0
            out.uns["cellbridge"]["n_clipped"] = n_clipped
        return out

    def _target_var(self, target: str) -> pd.DataFrame:
        cfg = self.config["domains"][target]
        if cfg["modality"] == "image":
            return pd.DataFrame(index=pd.Index([], dtype=str))
        if target in self.adatas:
            return self.adatas[target].var.loc[cfg["features"]].copy()
        return pd.DataFrame(index=pd.Index(cfg["features"]))

    # ------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write ``model.pt``, ``config.json`` (and ``history.tsv`` once trained) into folder ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.module.state_dict().items()}
        with atomic_path(path / MODEL_FILE) as tmp:
            torch.save(state, tmp)
        write_json({"cellbridge_version": package_version(), "config": self.config}, path / CONFIG_FILE)
        if self.history is not None:
            write_table(self.history, path / HISTORY_FILE)
        self.path = path
        return path

    @classmethod
    def load(
        cls, path: str | Path, adatas: Mapping[str, ad.AnnData] | None = None, *, device: str | torch.device = "auto"
    ) -> CrossModalModel:
        """Load a model written by :meth:`save`.

        Parameters
        ----------
        path
            Model folder.
        adatas
            Data to register (any subset of the model's domains); features are
            matched by name and reordered, and a mismatch raises an
            :class:`~cellbridge.InputError` naming the missing and extra features.
        device
            Where to put the model.
        """
        path = Path(path)
        for f in (MODEL_FILE, CONFIG_FILE):
            if not (path / f).exists():
                raise InputError(path / f, "is missing; not a saved cellbridge model folder")
        self = cls.__new__(cls)
        try:
            self.config = json.loads((path / CONFIG_FILE).read_text())["config"]
            self.module = build_module(self.config)
        except (ValueError, KeyError, TypeError, AttributeError) as err:  # JSON errors are ValueErrors
            detail = f"no key {err}" if isinstance(err, KeyError) else str(err).splitlines()[0]
            raise InputError(
                path / CONFIG_FILE, f"is not a valid cellbridge model configuration ({detail}); save the model again"
            ) from None
        self.device = resolve_device(device)
        state = load_tensors(path / MODEL_FILE, "model weights")
        try:
            self.module.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError):
            # torch lists every mismatching tensor over many lines; the cause is one of two files
            raise InputError(
                path,
                f"{MODEL_FILE} does not fit the architecture in {CONFIG_FILE} (files of different models "
                "or an edited config.json); save the model again",
            ) from None
        self.module.to(self.device).eval()
        self.adatas, self.data, self.anchors = {}, {}, []
        for name, adata in (adatas or {}).items():
            self._check_domain(name)
            self.data[name] = self._register(name, adata)
            self.adatas[name] = adata
        self.history = pd.read_csv(path / HISTORY_FILE, sep="\t", index_col=0) if (path / HISTORY_FILE).exists() else None
        self.path = path
        return self


def _correspondence_config(
    method: str, options: Mapping[str, Any] | None, alignment: str, n_domains: int, *, supervised: bool
) -> dict[str, Any]:
    """Resolve ``correspondence="auto"`` and check its options (JSON-able, part of the config).

    ``auto`` turns the prior on for unsupervised alignment, where it was measured to
    help (PBMC, scNMT-seq); with label supervision the label-matched minibatches stay
    the default until the label-fused prior has been measured against them.
    """
    if method not in ("auto", "gw", "none"):
        raise ValueError(f"correspondence must be 'auto', 'gw' or 'none', got {method!r}")
    if method == "auto":
        method = "gw" if alignment != "none" and n_domains > 1 and not supervised else "none"
    options = dict(options or {})
    unknown = set(options) - {"n_landmarks", "k_grid", "epsilon", "max_cells", "n_restarts", "starts", "scalings", "multiscale", "refine", "seed"}
    if unknown:
        raise ValueError(f"unknown correspondence option(s) {sorted(unknown)}")
    if "k_grid" in options:
        options["k_grid"] = [int(k) for k in options["k_grid"]]
    for key in ("starts", "scalings"):
        if key in options:
            options[key] = [str(s) for s in options[key]]
    for key in ("multiscale", "refine"):
        if key in options:
            options[key] = bool(options[key])
    return {"method": method, **options}


def _crop_morphology(crops: np.ndarray, params: Mapping[str, Any], *, index: pd.Index) -> pd.DataFrame:
    """Morphology of predicted crops, measured as the imaging preprocessing measured the data."""
    from .preprocess.morphology import crop_features

    keys = ("mask_threshold", "n_shells", "glcm_levels")
    return crop_features(crops, index=index, **{k: params[k] for k in keys if k in params})


def build_module(config: Mapping[str, Any]) -> CrossModalModule:
    """Build the torch module described by a model configuration (seeded initialisation)."""
    latent_dim = config["latent_dim"]
    n_labels = len(config["labels"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config["seed"])
        autoencoders = {
            name: DomainAutoencoder(
                modality=d["modality"],
                likelihood=d["likelihood"],
                latent_dim=latent_dim,
                n_features=len(d["features"]),
                image_size=d["image_size"],
                variational=config["variational"],
                x_scale=d["x_scale"] or 1e4,
                default_library=d["default_library"] or 1e4,
                variance=d.get("variance") or 1.0,
                architecture=d["architecture"],
            )
            for name, d in config["domains"].items()
        }
        aligner = get_aligner(
            config["alignment"],
            latent_dim=latent_dim,
            n_domains=len(autoencoders),
            n_labels=n_labels,
            **config["alignment_kwargs"],
        )
        classifier = LabelClassifier(latent_dim, n_labels) if n_labels else None
    return CrossModalModule(autoencoders, aligner, classifier=classifier)


def anchor_sets(
    anchors: pd.DataFrame, data: Mapping[str, DomainData], *, fraction: float = 1.0, seed: int = 0
) -> list[AnchorSet]:
    """Turn a table of known partners into index pairs per domain pair.

    Parameters
    ----------
    anchors
        Columns named by domains, rows holding the ``obs_names`` of one cell
        identity in each domain (missing values allowed).
    fraction
        Fraction of rows used, chosen at random by ``seed``.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"anchor_fraction must be in (0, 1], got {fraction}")
    cols = [c for c in anchors.columns if c in data]
    unknown = [c for c in anchors.columns if c not in data]
    if unknown or len(cols) < 2:
        raise InputError(
            "anchors", f"columns must name at least two domains of the model {list(data)}; unknown columns: {unknown}"
        )
    rng = np.random.default_rng([seed, 3])
    n_keep = max(1, int(round(fraction * len(anchors))))
    table = anchors.iloc[np.sort(rng.choice(len(anchors), n_keep, replace=False))]
    sets = []
    for i, a in enumerate(cols):
        for b in cols[i + 1 :]:
            rows = table[[a, b]].dropna()
            idx_a = data[a].obs_names.get_indexer(rows[a].astype(str))
            idx_b = data[b].obs_names.get_indexer(rows[b].astype(str))
            for dom, names, idx in ((a, rows[a], idx_a), (b, rows[b], idx_b)):
                if (idx < 0).any():
                    bad = names[idx < 0].astype(str).tolist()
                    raise InputError("anchors", f"{len(bad)} obs name(s) not found in domain {dom!r}: {bad[:5]}")
            if len(rows):
                sets.append(AnchorSet(a, b, idx_a, idx_b))
    return sets
