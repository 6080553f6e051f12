"""Training loop: balanced minibatches, alignment schedule, validation, checkpoints.

Each optimisation step draws one minibatch from *every* domain; an epoch is as
many steps as it takes to see the largest domain's training cells once (smaller
domains are cycled through fresh permutations). When every domain has shared
labels, ``match_label_batches`` (default) draws the other domains' batches with
the first domain's label counts (:class:`~cellbridge.sampling.LabelMatchedSampler`), so the alignment
loss never sees two batches that differ by composition alone. The loss of a step is

    sum_d recon_d + kl_weight * sum_d kl_d + w(epoch) * align_weight * align
      + label_weight * label + anchor_weight * anchor + prior_weight * prior

With a geometric correspondence prior (:mod:`cellbridge.geometry`), the other
domains' batches hold the prior partners of the first domain's batch, row by row
(:class:`~cellbridge.sampling.CorrespondenceSampler`), and ``prior`` is :func:`~cellbridge.align.anchor_loss`
on those rows: the squared distance between partners relative to non-partners.

where ``w`` is 0 during the warm-up epochs (the autoencoders learn alone, and the
alignment term of OT and MMD is not computed), then
ramps linearly to 1 over ``ramp_epochs`` (``align_schedule="linear"``) or jumps
to 1 (``"constant"``). The schedule counts epochs of at most
:data:`SCHEDULE_EPOCH_STEPS` optimiser steps: on large data one pass over the cells
counts as several schedule epochs and the weight changes within it (see
:meth:`TrainingPlan.schedule_epoch`). Supervision (labels, anchors) is on from the first epoch:
it organises each domain's latent around the shared labels before distribution
matching starts, so the aligner finds type-to-type correspondences instead of
whatever matching of unorganised clouds is cheapest. An adversarial aligner's
discriminator is trained on every step, warm-up included, so it is already
informative when alignment starts.

Validation and early stopping
-----------------------------
A random ``validation_fraction`` of each domain's training cells (by seed) is held
out. After every epoch the held-out cells give ``val_loss`` = the summed
reconstruction (and KL) losses + ``align_weight`` x the alignment loss between the
held-out latents (not for ``adversarial``, whose value measures the discriminator
as much as the encoders) + ``label_weight`` x the label loss. The full weights are
used whatever the schedule, so ``val_loss`` measures the final objective; early
stopping only counts epochs after the ramp has finished, because before that the
objective being optimised is still changing by design. The best weights (lowest
``val_loss``) are restored at the end.

Checkpoints
-----------
Every ``checkpoint_every`` epochs (and at the end) the module, optimiser states,
history, early-stopping state, epoch and RNG states are written atomically to
``checkpoint_dir/checkpoint.pt``. A rerun with ``resume=True`` continues from it
and, on CPU, reproduces the history of an uninterrupted run. A checkpoint that
cannot be resumed (unreadable, written under another configuration, or past
``max_epochs``) is renamed to ``checkpoint.damaged.pt``/``checkpoint.stale.pt``
with a warning and training starts afresh. A non-finite loss
raises :class:`TrainingDivergedError` naming the loss term and the epoch; the
last good checkpoint is left untouched.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ._io import InputError, atomic_path, load_tensors
from .align import anchor_loss
from .data import DomainData
from .nn.autoencoder import CrossModalModule
from .sampling import SamplerFactory, default_sampler, split_validation

logger = logging.getLogger("cellbridge")

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
#: growth of the reconstruction loss over its value when a run starts that only a
#: diverging run shows (training lowers it; alignment costs a little, never 10x)
EXPLODING_LOSS_FACTOR = 10.0
#: held-out cells per domain used for the validation alignment loss (bounds its OT cost)
MAX_VALIDATION_ALIGN_CELLS = 512
#: cells per domain per step at which every default (learning rate, aligner options) was measured
REFERENCE_BATCH_SIZE = 128
#: steps per epoch beyond which ``batch_size="auto"`` grows the batch (see :func:`auto_batch_size`)
MAX_STEPS_PER_EPOCH = 2048
#: largest batch ``"auto"`` chooses
MAX_AUTO_BATCH_SIZE = 1024
#: steps per epoch from which a progress bar over the epoch's cells is shown
STEP_BAR_MIN_STEPS = 200

Callback = Callable[[int, Mapping[str, float]], None]


class TrainingDivergedError(RuntimeError):
    """A loss term became NaN or infinite; the message names the term and the epoch."""

    def __init__(self, term: str, value: float, epoch: int, checkpoint: str | None):
        self.term, self.value, self.epoch, self.checkpoint = term, value, epoch, checkpoint
        kept = (
            f"the last good checkpoint is kept at {checkpoint}"
            if checkpoint
            else "no checkpoint was written (set checkpoint_dir to keep one)"
        )
        super().__init__(
            f"training diverged: loss term {term!r} is {value} at epoch {epoch}; {kept}. "
            "Try a lower learning rate or alignment weight."
        )


def auto_batch_size(n_cells: int) -> int:
    """Cells per step for ``batch_size="auto"``, given the largest domain's training cells.

    :data:`REFERENCE_BATCH_SIZE` (128) while an epoch takes at most
    :data:`MAX_STEPS_PER_EPOCH` (2,048) steps, i.e. up to 262,144 training cells; beyond,
    the smallest power of two that keeps an epoch within that many steps (at most
    :data:`MAX_AUTO_BATCH_SIZE`). Why: the autoencoders need a number of optimiser steps,
    not of cells, and at 128 cells a CPU step is mostly per-operation overhead, so at a
    million cells a 512-cell step costs about 2x a 128-cell one for 4x the cells. Every
    data set measured in this repository (demo, sci-CAR, PBMC, scNMT) keeps 128.
    """
    batch = REFERENCE_BATCH_SIZE
    while batch < MAX_AUTO_BATCH_SIZE and math.ceil(n_cells / batch) > MAX_STEPS_PER_EPOCH:
        batch *= 2
    return batch


def scaled_lr(lr: float, batch_size: int) -> float:
    """``lr`` for ``batch_size``, given for :data:`REFERENCE_BATCH_SIZE` cells: x sqrt(batch / 128).

    The square-root rule for Adam: a b-times larger batch has a sqrt(b)-times smaller
    gradient noise, so the step can grow by sqrt(b) at the same noise per step.
    """
    return float(lr) * math.sqrt(batch_size / REFERENCE_BATCH_SIZE)


def peak_memory_mb(device: torch.device | None = None) -> float:
    """Peak resident memory of this process so far (MiB), or peak CUDA memory on a CUDA device."""
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


#: Longest epoch of the alignment schedule, in optimiser steps (128 steps of 128 cells
#: = 16,384 cells). The autoencoders settle in a number of *steps*: the warm-up of every
#: data set the defaults were set on (demo, sci-CAR, PBMC, scNMT-seq: 4-16 steps per
#: epoch) is under 100 steps. Counted in passes over the data instead, a million cells'
#: 5-epoch warm-up would be 10,000 steps of 512 cells, and a one-epoch run would never
#: align. Data with at most this many steps per epoch keep the per-epoch schedule exactly.
SCHEDULE_EPOCH_STEPS = 128


@dataclass
class TrainingPlan:
    """Options of one training run (see :meth:`cellbridge.CrossModalModel.train`)."""

    max_epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    critic_lr: float | None = None
    warmup_epochs: int = 5
    ramp_epochs: int = 10
    align_weight: float = 1.0
    align_schedule: str = "linear"
    label_weight: float = 1.0
    label_smoothing: float = 0.7
    match_label_batches: bool = True
    anchor_weight: float = 1.0
    prior_weight: float = 1.0
    kl_weight: float = 1e-3
    validation_fraction: float = 0.1
    early_stopping_patience: int | None = None
    min_delta: float = 0.0
    grad_clip: float | None = 10.0
    use_test_cells: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {self.max_epochs}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2, got {self.batch_size}")
        if self.align_schedule not in ("linear", "constant"):
            raise ValueError(f"align_schedule must be 'linear' or 'constant', got {self.align_schedule!r}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError("early_stopping_patience must be >= 1 or None")

    def schedule(self, epoch: int) -> float:
        """Factor in [0, 1] applied to the alignment loss at 1-based ``epoch``."""
        after = epoch - self.warmup_epochs
        if after <= 0:
            return 0.0
        if self.align_schedule == "constant" or self.ramp_epochs <= 0:
            return 1.0
        return min(1.0, after / self.ramp_epochs)

    def schedule_epoch(self, epoch: int, step: int, steps_per_epoch: int) -> int:
        """The schedule's 1-based epoch at 0-based ``step`` of the data's 1-based ``epoch``.

        The data's epoch itself when it has at most :data:`SCHEDULE_EPOCH_STEPS` steps;
        otherwise one schedule epoch per :data:`SCHEDULE_EPOCH_STEPS` steps of training.
        """
        if steps_per_epoch <= SCHEDULE_EPOCH_STEPS:
            return epoch
        return ((epoch - 1) * steps_per_epoch + step) // SCHEDULE_EPOCH_STEPS + 1

    def full_weight_epoch(self, steps_per_epoch: int = 1) -> int:
        """First epoch of the data in which the schedule reaches 1."""
        if self.align_schedule == "constant" or self.ramp_epochs <= 0:
            full = self.warmup_epochs + 1
        else:
            full = self.warmup_epochs + self.ramp_epochs
        if steps_per_epoch <= SCHEDULE_EPOCH_STEPS:
            return full
        return (full - 1) * SCHEDULE_EPOCH_STEPS // steps_per_epoch + 1

    def resume_key(self) -> dict[str, Any]:
        """Options that must match for a checkpoint to be resumed (not the epoch budget)."""
        d = dataclasses.asdict(self)
        for k in ("max_epochs", "early_stopping_patience", "min_delta"):
            d.pop(k)
        return d


@dataclass
class AnchorSet:
    """Known partner cells between two domains (row positions in each domain's data)."""

    domain_a: str
    domain_b: str
    index_a: np.ndarray
    index_b: np.ndarray



def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: the first CUDA device when available, else the CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Trainer:
    """Optimise a :class:`~cellbridge.nn.CrossModalModule` on registered domains.

    Parameters
    ----------
    module
        The module to train (updated in place).
    data
        Registered domains by name (same order as ``module.autoencoders``).
    plan
        Training options.
    anchors
        Known pairs used by the anchor loss.
    device
        Where to train.
    fingerprint
        JSON-able description of the model; a checkpoint is only resumed when
        its fingerprint and the plan's :meth:`TrainingPlan.resume_key` match.
    checkpoint_dir, checkpoint_every, resume
        See the module docstring.
    progress
        Show a tqdm progress bar over epochs.
    callbacks
        Called as ``callback(epoch, history_row)`` after each epoch (after its
        checkpoint is written); an exception raised there stops training.
    sampler
        Builds the minibatch sampler from the trainer (default :func:`default_sampler`);
        benchmarks wrap it, e.g. to cap the steps of an epoch.
    """

    def __init__(
        self,
        module: CrossModalModule,
        data: Mapping[str, DomainData],
        plan: TrainingPlan,
        *,
        anchors: Sequence[AnchorSet] = (),
        priors: Sequence[Any] = (),
        device: torch.device,
        fingerprint: Mapping[str, Any] | None = None,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 5,
        resume: bool = True,
        progress: bool = True,
        callbacks: Sequence[Callback] = (),
        sampler: SamplerFactory = default_sampler,
    ):
        self.module = module
        self.plan = plan
        self.device = device
        self.domains = list(module.autoencoders.keys())
        self.data = {k: data[k].to(device) for k in self.domains}
        self.fingerprint = json.dumps({"model": fingerprint or {}, "plan": plan.resume_key()}, sort_keys=True, default=str)
        self.checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
        self.checkpoint_every = checkpoint_every
        self.resume = resume
        self.progress = progress
        self.callbacks = list(callbacks)
        self.last_checkpoint_epoch: int | None = None

        split_rng = np.random.default_rng([plan.seed, 1])
        self.train_cells: dict[str, np.ndarray] = {}
        self.val_cells: dict[str, np.ndarray] = {}
        for name in self.domains:
            cells = self.data[name].training_cells(use_test_cells=plan.use_test_cells)
            if len(cells) == 0:
                raise InputError(f"domain {name!r}", "has no training cells (all are marked obs['split'] == 'test')")
            self.train_cells[name], self.val_cells[name] = split_validation(cells, plan.validation_fraction, split_rng)
        self.has_validation = all(len(v) > 0 for v in self.val_cells.values())
        if plan.early_stopping_patience is not None and not self.has_validation:
            logger.warning("early stopping disabled: no validation cells (validation_fraction=%s)", plan.validation_fraction)
        train_set = {n: set(c.tolist()) for n, c in self.train_cells.items()}
        self.anchors = [
            a for a in (_restrict_anchors(a, train_set) for a in anchors) if len(a.index_a) > 0
        ]

        # the correspondence prior links training cells only (validation cells stay unseen)
        first = self.domains[0]
        self.priors = [
            p.restrict(self.train_cells[p.domain_a], self.train_cells[p.domain_b])
            for p in priors
            if p.domain_a == first and p.domain_b in self.train_cells and plan.prior_weight > 0
        ]
        self.rng = np.random.default_rng([plan.seed, 2])
        self.sampler = sampler(self)
        # foreach: one vectorised update over all parameters (torch picks the per-tensor loop on
        # the CPU, which was a fifth of a 128-cell step there)
        self.optimizer = torch.optim.Adam(
            module.cooperative_parameters(), lr=plan.lr, weight_decay=plan.weight_decay, foreach=True
        )
        critic = module.critic_parameters()
        self.critic_optimizer = (
            torch.optim.Adam(critic, lr=plan.critic_lr or plan.lr / 4, betas=(0.5, 0.9), foreach=True) if critic else None
        )
        self.history: list[dict[str, float]] = []
        self.best = {"value": math.inf, "epoch": 0, "bad_epochs": 0, "state": None, "stopped": False}

    # ------------------------------------------------------------------ steps
    def _loss_terms(self, batches: Mapping[str, Mapping[str, torch.Tensor]], weight: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss of one step and its named terms (the critic is stepped here)."""
        plan, module = self.plan, self.module
        latents, labels, recon, kl = [], [], {}, {}
        for name in self.domains:
            mean, recon[name], kl[name] = module.domain_losses(name, batches[name], sample=True)
            latents.append(mean)
            labels.append(batches[name].get("labels"))
        aligner = module.aligner
        critic_terms: dict[str, torch.Tensor] = {}
        if aligner.adversarial:
            # the discriminator steps on this batch's latents before the encoders are scored against it
            critic_loss, critic_acc = aligner.critic_loss(latents, labels)
            self._check_finite({"discriminator_loss": critic_loss})
            self.critic_optimizer.zero_grad(set_to_none=True)
            critic_loss.backward()
            self.critic_optimizer.step()
            critic_terms = {"discriminator_loss": critic_loss.detach(), "discriminator_acc": critic_acc}
        # the alignment term is not computed during warm-up, where its weight is 0: the OT
        # solve of an unsupervised step costs as much as the rest of the step, and a term
        # times 0 adds exact zeros to every gradient (validation still measures it). The
        # adversarial term is cheap and draws the discriminator's dropout: skipping it
        # would change the run's random stream
        out = module.loss(
            latents, labels, recon, kl,
            kl_weight=plan.kl_weight,
            align_weight=weight * plan.align_weight if weight > 0 or aligner.adversarial else None,
            label_weight=plan.label_weight,
            label_smoothing=plan.label_smoothing,
        )
        total, terms = out.total, {**critic_terms, **out.terms}
        if self.priors:
            # rows of the batches are pairs drawn from the prior (CorrespondenceSampler)
            lead = latents[0]
            pulls = [anchor_loss(lead, latents[self.domains.index(p.domain_b)]) for p in self.priors]
            terms["prior_loss"] = torch.stack(pulls).mean()
            total = total + plan.prior_weight * terms["prior_loss"]
        if self.anchors:
            anchor = torch.stack([self._anchor_term(a) for a in self.anchors]).mean()
            terms["anchor_loss"] = anchor
            total = total + plan.anchor_weight * anchor
        terms["loss"] = total
        return total, terms

    def _anchor_term(self, anchors: AnchorSet) -> torch.Tensor:
        n = min(self.plan.batch_size, len(anchors.index_a))
        pick = self.rng.choice(len(anchors.index_a), n, replace=False)
        za = self._encode(anchors.domain_a, anchors.index_a[pick])
        zb = self._encode(anchors.domain_b, anchors.index_b[pick])
        return anchor_loss(za, zb)

    def _encode(self, name: str, idx: np.ndarray) -> torch.Tensor:
        batch = self.data[name].batch(idx, self.device, with_targets=False)
        return self.module.autoencoders[name].encode(batch)[0]

    def _check_finite(self, terms: Mapping[str, torch.Tensor]) -> None:
        """Raise :class:`TrainingDivergedError` naming the first non-finite loss term.

        Accuracies are skipped: they are NaN by design when a batch has no labelled cell.
        """
        names = [k for k in terms if not k.endswith("_acc")]
        values = torch.stack([terms[k].detach().float().reshape(()) for k in names])
        finite = torch.isfinite(values)
        if not bool(finite.all()):  # one host sync per step, the price of naming the culprit
            bad = int((~finite).nonzero()[0, 0])
            raise TrainingDivergedError(names[bad], float(values[bad]), self.epoch, self._checkpoint_str())

    def _checkpoint_str(self) -> str | None:
        if self.checkpoint_path is not None and self.checkpoint_path.exists():
            return str(self.checkpoint_path)
        return None

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass; returns the mean of every loss term over the epoch's steps."""
        self.module.train()
        plan, steps = self.plan, self.sampler.steps_per_epoch
        weights = [plan.schedule(plan.schedule_epoch(epoch, step, steps)) for step in range(steps)]
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        params = self.module.cooperative_parameters()
        bar = self._step_bar(epoch)
        for idx, weight in zip(self.sampler.epoch(), weights, strict=True):
            batches = {name: self.data[name].batch(i, self.device) for name, i in idx.items()}
            total, terms = self._loss_terms(batches, weight)
            self._check_finite(terms)
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            if self.plan.grad_clip is not None:
                norm = torch.nn.utils.clip_grad_norm_(params, self.plan.grad_clip)
                if not torch.isfinite(norm):
                    raise TrainingDivergedError("gradient norm", float(norm), epoch, self._checkpoint_str())
            self.optimizer.step()
            for k, v in terms.items():
                val = float(v.detach())
                if not math.isnan(val):
                    sums[k] = sums.get(k, 0.0) + val
                    counts[k] = counts.get(k, 0) + 1
            if bar is not None:
                bar.update(sum(len(i) for i in idx.values()))
        if bar is not None:
            bar.close()
        row = {k: sums[k] / counts[k] for k in sums}
        # the weight of the epoch (its mean over the steps when it changed within the epoch)
        row["schedule"] = weights[0] if len(set(weights)) == 1 else float(np.mean(weights))
        return row

    def _step_bar(self, epoch: int):
        """Progress within a long epoch (at least :data:`STEP_BAR_MIN_STEPS` steps), else None.

        With ``progress``: a tqdm bar over the epoch's cells (cells/s, ETA). Without (the
        workflow's jobs): a log line every :data:`PROGRESS_LOG_SECONDS` seconds, so a job
        log shows how far a long epoch is, its speed and the memory it holds.
        """
        steps = self.sampler.steps_per_epoch
        if steps < STEP_BAR_MIN_STEPS:
            return None
        cells = steps * sum(self.sampler.batch_sizes.values())
        if not self.progress:
            return _ProgressLog(f"epoch {epoch}/{self.plan.max_epochs}", cells, self.device)
        from tqdm.auto import tqdm

        return tqdm(total=cells, desc=f"epoch {epoch}/{self.plan.max_epochs}", unit="cells", unit_scale=True, leave=False)

    def _log_epoch(self, row: Mapping[str, float]) -> None:
        """One log line per epoch: losses, time, speed, memory and the run's ETA."""
        done = row["epoch"]
        mean_s = sum(r["seconds"] for r in self.history[-5:]) / len(self.history[-5:])
        eta = (self.plan.max_epochs - done) * mean_s
        losses = ", ".join(f"{k} {row[k]:.4g}" for k in ("loss", "align", "val_loss") if k in row)
        logger.info(
            "epoch %d/%d: %s; %.1f s, %.0f cells/s, peak memory %.0f MiB; about %s left for the run",
            done, self.plan.max_epochs, losses, row["seconds"], row["cells_per_s"], row["peak_memory_mb"],
            _duration(eta),
        )

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Losses of the held-out cells (eval mode) and the monitored ``val_loss``.

        The objective of :meth:`CrossModalModule.loss` at full alignment weight, without the
        correspondence prior and anchors (training-only pulls) and, for an adversarial
        aligner, without its term (it scores the encoders against a discriminator that
        moves, so it does not fall as the model improves). Reconstruction is averaged over
        every held-out cell, alignment and labels over the first
        :data:`MAX_VALIDATION_ALIGN_CELLS` of each domain.
        """
        if not self.has_validation:
            return {}
        plan, module = self.plan, self.module
        module.eval()
        latents, labels, recon, kl = [], [], {}, {}
        for name in self.domains:
            recon_sum, kl_sum, means, labs = 0.0, 0.0, [], []
            cells = self.val_cells[name]
            variational = False
            for start in range(0, len(cells), 1024):
                idx = cells[start : start + 1024]
                batch = self.data[name].batch(idx, self.device)
                mean, chunk_recon, chunk_kl = module.domain_losses(name, batch, sample=False)
                recon_sum += float(chunk_recon) * len(idx)
                if chunk_kl is not None:
                    kl_sum += float(chunk_kl) * len(idx)
                    variational = True
                means.append(mean)
                labs.append(batch.get("labels"))
            recon[name] = torch.tensor(recon_sum / len(cells), dtype=torch.float64)
            kl[name] = torch.tensor(kl_sum / len(cells), dtype=torch.float64) if variational else None
            latents.append(torch.cat(means)[:MAX_VALIDATION_ALIGN_CELLS])
            labels.append(torch.cat(labs)[:MAX_VALIDATION_ALIGN_CELLS] if labs[0] is not None else None)
        out = module.loss(
            latents, labels, recon, kl,
            kl_weight=plan.kl_weight,
            align_weight=0.0 if module.aligner.adversarial else plan.align_weight,
            label_weight=plan.label_weight,
            label_smoothing=plan.label_smoothing,
        )
        row = {f"val_{k}": float(v) for k, v in out.terms.items() if not k.startswith("kl_")}
        if module.aligner.adversarial:
            _, acc = module.aligner.critic_loss(latents, labels)
            row["val_discriminator_acc"] = float(acc)
        row["val_loss"] = float(out.total)
        return row

    # ------------------------------------------------------------ checkpoints
    def _state(self, epoch: int) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "fingerprint": self.fingerprint,
            "module": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict() if self.critic_optimizer else None,
            "history": self.history,
            "best": self.best,
            "rng": {
                "numpy": self.rng.bit_generator.state,
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            },
        }

    def save_checkpoint(self, epoch: int) -> None:
        """Write the full training state atomically (replacing the previous checkpoint)."""
        if self.checkpoint_path is None:
            return
        with atomic_path(self.checkpoint_path) as tmp:
            torch.save(self._state(epoch), tmp)
        self.last_checkpoint_epoch = epoch

    def load_checkpoint(self) -> int:
        """Restore the state from ``checkpoint_dir``; return the epoch it was written after (0 if none)."""
        if self.checkpoint_path is None or not self.resume or not self.checkpoint_path.exists():
            return 0
        try:
            state = load_tensors(self.checkpoint_path, "checkpoint", map_location=self.device)
        except InputError as err:
            # a rerun must recover by itself: an unreadable checkpoint only costs the epochs in it
            # (the problem without its advice to delete the file, which setting it aside replaces)
            self._set_aside_checkpoint("damaged", err.problem.split("; ")[0])
            return 0
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or state.get("fingerprint") != self.fingerprint:
            self._set_aside_checkpoint("stale", "written by a run with a different model or training configuration")
            return 0
        if int(state["epoch"]) > self.plan.max_epochs:
            # training cannot be undone: resuming would return a model trained for longer than asked
            self._set_aside_checkpoint("stale", f"written after epoch {state['epoch']}, beyond max_epochs={self.plan.max_epochs}")
            return 0
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.critic_optimizer is not None:
            self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.history = [dict(r) for r in state["history"]]
        self.best = dict(state["best"])
        self.rng.bit_generator.state = state["rng"]["numpy"]
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if self.device.type == "cuda" and state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])
        self.last_checkpoint_epoch = int(state["epoch"])
        logger.info("resuming from %s after epoch %d", self.checkpoint_path, state["epoch"])
        return int(state["epoch"])

    def _set_aside_checkpoint(self, reason: str, problem: str) -> Path:
        """Rename an unusable checkpoint to ``checkpoint.<reason>.pt`` with a warning; training restarts.

        Kept rather than deleted so the user can still inspect it; one file per reason,
        replaced on the next occasion, so set-aside checkpoints never pile up.
        """
        aside = self.checkpoint_path.with_name(f"{self.checkpoint_path.stem}.{reason}{self.checkpoint_path.suffix}")
        self.checkpoint_path.replace(aside)
        logger.warning("checkpoint %s: %s; set aside as %s, training starts from epoch 1", self.checkpoint_path, problem, aside.name)
        return aside

    # ------------------------------------------------------------ early stop
    def _update_early_stopping(self, epoch: int, row: Mapping[str, float]) -> bool:
        """Track the best ``val_loss``; return True when training should stop."""
        if "val_loss" not in row or epoch < self.plan.full_weight_epoch(self.sampler.steps_per_epoch):
            return False
        if row["val_loss"] < self.best["value"] - self.plan.min_delta:
            self.best.update(
                value=row["val_loss"],
                epoch=epoch,
                bad_epochs=0,
                state={k: v.detach().clone() for k, v in self.module.state_dict().items()},
            )
            return False
        self.best["bad_epochs"] += 1
        patience = self.plan.early_stopping_patience
        return patience is not None and self.best["bad_epochs"] >= patience

    @torch.no_grad()
    def _reference_recon(self, n_cells: int = 256) -> float:
        """Reconstruction loss of the model as it starts, on a few training cells per domain.

        The scale a sane run stays below; deterministic (eval mode, no sampling, the
        first cells), so it leaves every random stream of the run untouched.
        """
        self.module.eval()
        total = 0.0
        for name in self.domains:
            batch = self.data[name].batch(self.train_cells[name][:n_cells], self.device)
            total += float(self.module.domain_losses(name, batch, sample=False)[1])
        return abs(total)

    # -------------------------------------------------------------------- fit
    def fit(self) -> pd.DataFrame:
        """Train until ``max_epochs`` or early stopping; return the per-epoch history."""
        from tqdm.auto import tqdm

        self.epoch = 0
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        # the run's RNG streams are its own: the caller's global torch RNG is restored afterwards
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.plan.seed)
            start = self.load_checkpoint()
            reference, warned = self._reference_recon(), False
            if self.best.get("stopped"):
                start = self.plan.max_epochs
            bar = tqdm(range(start + 1, self.plan.max_epochs + 1), disable=not self.progress, desc="training", unit="epoch")
            for epoch in bar:
                self.epoch = epoch
                t0 = time.perf_counter()
                row: dict[str, float] = {"epoch": epoch}
                row.update(self.train_epoch(epoch))
                t_val = time.perf_counter()
                row.update(self.validate())
                row["validation_seconds"] = time.perf_counter() - t_val
                row["seconds"] = time.perf_counter() - t0
                row["cells_per_s"] = self.sampler.steps_per_epoch * sum(self.sampler.batch_sizes.values()) / row["seconds"]
                row["peak_memory_mb"] = peak_memory_mb(self.device)
                self.history.append(row)
                if not warned and _recon_total(row) > EXPLODING_LOSS_FACTOR * reference:
                    # a too-high learning rate need not give NaN: losses can settle at 1e16
                    # and the run "succeed" with a useless model
                    warned = True
                    logger.warning(
                        "reconstruction loss %.3g at epoch %d is over %g x its value when this run started "
                        "(%.3g): training is diverging; lower the learning rate (lr=%g)",
                        _recon_total(row), epoch, EXPLODING_LOSS_FACTOR, reference, self.plan.lr,
                    )
                stop = self._update_early_stopping(epoch, row)
                self.best["stopped"] = stop
                if stop or epoch % self.checkpoint_every == 0 or epoch == self.plan.max_epochs:
                    self.save_checkpoint(epoch)
                bar.set_postfix({k: f"{row[k]:.3g}" for k in ("loss", "align", "val_loss") if k in row})
                if not self.progress:
                    self._log_epoch(row)
                for callback in self.callbacks:
                    callback(epoch, dict(row))
                if stop:
                    logger.info("early stopping after epoch %d (best epoch %d)", epoch, self.best["epoch"])
                    break
            bar.close()
        if self.best.get("state") is not None and self.plan.early_stopping_patience is not None:
            self.module.load_state_dict(self.best["state"])
        self.module.eval()
        return history_frame(self.history)


#: seconds between progress lines of a long epoch in a job log
PROGRESS_LOG_SECONDS = 60.0


class _ProgressLog:
    """tqdm's ``update``/``close`` as log lines: every :data:`PROGRESS_LOG_SECONDS`, the share of
    the epoch's cells done, cells/s, the epoch's ETA and the peak memory so far."""

    def __init__(self, what: str, total: int, device: torch.device):
        self.what, self.total, self.device = what, total, device
        self.done = 0
        self.start = self.last = time.perf_counter()

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last < PROGRESS_LOG_SECONDS:
            return
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        logger.info(
            "%s: %.0f%% of %s cells, %.0f cells/s, about %s left in this epoch, peak memory %.0f MiB",
            self.what, 100 * self.done / self.total, f"{self.total:,}", rate,
            _duration((self.total - self.done) / max(rate, 1e-9)), peak_memory_mb(self.device),
        )

    def close(self) -> None:
        pass


def _duration(seconds: float) -> str:
    """``"3 h 05 min"``, ``"4 min 10 s"`` or ``"12 s"``."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def _recon_total(row: Mapping[str, float]) -> float:
    """Summed training reconstruction loss of a history row."""
    return sum(v for k, v in row.items() if k.startswith("recon_"))


def _restrict_anchors(anchors: AnchorSet, train_set: Mapping[str, set]) -> AnchorSet:
    """Keep only anchor pairs whose two cells are both training (not validation/test) cells."""
    keep = np.array(
        [a in train_set[anchors.domain_a] and b in train_set[anchors.domain_b] for a, b in zip(anchors.index_a, anchors.index_b)],
        dtype=bool,
    )
    return AnchorSet(anchors.domain_a, anchors.domain_b, anchors.index_a[keep], anchors.index_b[keep])


#: history columns that measure the run (time, speed, memory) rather than the model; last in the table
COST_COLUMNS = ("seconds", "validation_seconds", "cells_per_s", "peak_memory_mb")


def history_frame(rows: Sequence[Mapping[str, float]]) -> pd.DataFrame:
    """History rows as a DataFrame indexed by epoch, with the :data:`COST_COLUMNS` last."""
    df = pd.DataFrame(list(rows))
    if df.empty:
        return df
    df["epoch"] = df["epoch"].astype(int)
    cols = [c for c in df.columns if c not in ("epoch", *COST_COLUMNS)] + [c for c in COST_COLUMNS if c in df.columns]
    return df.set_index("epoch")[cols]
