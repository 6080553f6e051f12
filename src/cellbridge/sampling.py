"""Which cells a training step sees: the validation split, label checks and the minibatch samplers.

Each optimisation step draws one minibatch from *every* domain (:class:`BalancedSampler`);
with shared labels the other domains' batches copy the first one's label counts
(:class:`LabelMatchedSampler`); under a correspondence prior they hold the first batch's
prior partners row by row (:class:`CorrespondenceSampler`). :func:`default_sampler` picks
one for a :class:`~cellbridge.training.Trainer`; a replacement is passed as its ``sampler``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ._io import InputError
from .data import DomainData

if TYPE_CHECKING:  # the trainer hands itself to the sampler factory
    from .training import Trainer

logger = logging.getLogger("cellbridge")


def split_validation(n_cells: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random split of the cell indices ``n_cells`` into training and validation parts."""
    perm = rng.permutation(n_cells)
    n_val = int(round(fraction * len(perm)))
    if fraction > 0 and len(perm) >= 10:
        n_val = max(n_val, 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def check_label_supervision(
    data: Mapping[str, DomainData],
    label_key: str | None,
    categories: Sequence[str],
    *,
    use_test_cells: bool = False,
) -> None:
    """Refuse label supervision with nothing to learn from; warn about partly labelled domains.

    Labels reach a domain through a join (a label table, image annotations matched by
    position), so a wrong file or swapped coordinates leave cells unlabelled without
    any error upstream; training would then go ahead supervised by nothing.

    Parameters
    ----------
    data
        Registered domains by name.
    label_key
        The supervising obs column; ``None``: no supervision, nothing to check.
    categories
        Label names in code order.
    use_test_cells
        Whether held-out cells are trained on (else they are not counted).

    Raises
    ------
    InputError
        Naming the domain: no training cell labelled, a label with fewer than 2
        labelled training cells, or no label in common with any other domain.
    """
    if label_key is None:
        return
    found: dict[str, set[int]] = {}
    for name, domain in data.items():
        cells = domain.training_cells(use_test_cells=use_test_cells)
        labels = domain.labels.cpu().numpy() if isinstance(domain.labels, torch.Tensor) else domain.labels
        codes = np.asarray(labels)[cells] if labels is not None else np.full(len(cells), -1)
        known = codes[codes >= 0]
        where = f"domain {name!r}"
        if len(known) == 0:
            raise InputError(
                where,
                f"none of its {len(cells)} training cells has a label in obs[{label_key!r}], but training is "
                "supervised by labels; check the labels table or image annotations (file names, x/y), "
                "or train without label supervision",
            )
        values, counts = np.unique(known, return_counts=True)
        rare = [f"{categories[v]} ({c})" for v, c in zip(values, counts, strict=True) if c < 2]
        if rare:
            raise InputError(
                where,
                f"label(s) with fewer than 2 labelled training cells in obs[{label_key!r}]: {', '.join(rare)}; "
                "merge or drop these labels, or train without label supervision",
            )
        if len(known) < len(codes):
            logger.warning(
                "%s: %d of %d training cells have no label in obs[%r]; label supervision uses the %d labelled ones",
                where, len(codes) - len(known), len(codes), label_key, len(known),
            )
        found[name] = set(values.tolist())
    for name, labels in found.items():
        others = set().union(*(v for k, v in found.items() if k != name))
        if len(found) > 1 and not labels & others:
            raise InputError(
                f"domain {name!r}",
                f"shares no label in obs[{label_key!r}] with the other domains ({', '.join(sorted(categories[i] for i in labels))} "
                f"against {', '.join(sorted(categories[i] for i in others))}); labels must name the same groups in every domain",
            )


class BalancedSampler:
    """One minibatch per domain per step; an epoch covers the largest domain once.

    Each domain walks through fresh random permutations of its cells, concatenated
    as needed, so smaller domains are revisited within an epoch and no batch holds
    the same cell twice (unless a domain has fewer cells than ``batch_size``, in
    which case its batch is all of its cells).
    """

    def __init__(self, cells: Mapping[str, np.ndarray], batch_size: int, rng: np.random.Generator):
        self.cells = {k: np.asarray(v) for k, v in cells.items()}
        self.batch_sizes = {k: min(batch_size, len(v)) for k, v in self.cells.items()}
        self.rng = rng
        largest = max(len(v) for v in self.cells.values())
        self.steps_per_epoch = max(1, math.ceil(largest / batch_size))

    def epoch(self) -> Iterator[dict[str, np.ndarray]]:
        streams = {}
        for name, cells in self.cells.items():
            need = self.steps_per_epoch * self.batch_sizes[name]
            reps = math.ceil(need / len(cells))
            streams[name] = np.concatenate([cells[self.rng.permutation(len(cells))] for _ in range(reps)])
        for step in range(self.steps_per_epoch):
            yield {
                name: streams[name][step * self.batch_sizes[name] : (step + 1) * self.batch_sizes[name]]
                for name in self.cells
            }


class LabelMatchedSampler(BalancedSampler):
    """Like :class:`BalancedSampler`, but every domain's batch has the first domain's label counts.

    The first domain walks through permutations as usual; for each step, every
    other domain draws as many cells of each label as the first domain's batch
    holds (without replacement where it has enough cells of that label). Cells
    whose label is unknown, or missing from a domain, are matched by cells drawn
    at random. Random batches of the same domains differ in label composition
    by several cells per label; a balanced transport plan between them must then
    move that mass across labels and pulls the labels' latents together. With
    matched counts it need not.

    Parameters
    ----------
    cells
        Training cells per domain (the first domain sets the label counts).
    labels
        Label codes per domain for *all* cells (``-1`` unknown), indexed like the data.
    batch_size, rng
        As for :class:`BalancedSampler`.
    """

    def __init__(
        self, cells: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], batch_size: int, rng: np.random.Generator
    ):
        super().__init__(cells, batch_size, rng)
        self.first = next(iter(self.cells))
        self.labels = {k: np.asarray(v) for k, v in labels.items()}
        self.by_label = {
            name: {int(lab): cells_[self.labels[name][cells_] == lab] for lab in np.unique(self.labels[name][cells_]) if lab >= 0}
            for name, cells_ in self.cells.items()
            if name != self.first
        }

    def _matching(self, name: str, wanted: np.ndarray) -> np.ndarray:
        """Cells of domain ``name`` with the label counts of ``wanted`` (label codes)."""
        pools = self.by_label[name]
        picks, unmatched = [], 0
        for lab, count in zip(*np.unique(wanted, return_counts=True)):
            pool = pools.get(int(lab))  # None for unknown (-1) labels too: pools hold known labels only
            if pool is None:
                unmatched += int(count)
                continue
            picks.append(self.rng.choice(pool, int(count), replace=int(count) > len(pool)))
        if unmatched:
            everyone = self.cells[name]
            picks.append(self.rng.choice(everyone, unmatched, replace=unmatched > len(everyone)))
        return np.concatenate(picks)

    def epoch(self) -> Iterator[dict[str, np.ndarray]]:
        for batch in super().epoch():
            wanted = self.labels[self.first][batch[self.first]]
            yield {name: idx if name == self.first else self._matching(name, wanted) for name, idx in batch.items()}


class CorrespondenceSampler(BalancedSampler):
    """Like :class:`BalancedSampler`, but every other domain's batch holds the partners of the first's.

    Each cell of the first domain's batch gets a partner in every other domain drawn
    from the geometric correspondence prior (:meth:`cellbridge.geometry.CorrespondencePrior.partners`),
    in the same order: row ``i`` of every batch is a pair drawn from the coupling.
    The correspondence loss compares those rows; the aligner sees batches whose
    composition already agrees, as :class:`LabelMatchedSampler` gives it with labels.

    Parameters
    ----------
    cells
        Training cells per domain (the first domain leads).
    priors
        Restricted priors from the first domain to each other domain (``domain_a`` is the first).
    batch_size, rng
        As for :class:`BalancedSampler`.
    """

    def __init__(self, cells: Mapping[str, np.ndarray], priors: Sequence[Any], batch_size: int, rng: np.random.Generator):
        super().__init__(cells, batch_size, rng)
        self.first = next(iter(self.cells))
        self.priors = {p.domain_b: p for p in priors if p.domain_a == self.first}

    def epoch(self) -> Iterator[dict[str, np.ndarray]]:
        for batch in super().epoch():
            lead = batch[self.first]
            yield {
                name: self.priors[name].partners(lead, self.rng) if name in self.priors else idx
                for name, idx in batch.items()
            }


def default_sampler(trainer: Trainer) -> BalancedSampler:
    """The minibatch sampler of a run: partner batches under a correspondence prior; else
    label-matched batches when asked for and every domain has labels; else plain balanced ones.

    Called once by :class:`Trainer` (its ``sampler`` argument) after the training cells,
    priors and random generator are set; a replacement takes the trainer and returns any
    object with ``epoch()``, ``steps_per_epoch``, ``batch_sizes`` and ``cells``.
    """
    plan, rng = trainer.plan, trainer.rng
    if trainer.priors:
        return CorrespondenceSampler(trainer.train_cells, trainer.priors, plan.batch_size, rng)
    labels = {name: trainer.data[name].labels for name in trainer.domains}
    if not plan.match_label_batches or any(v is None for v in labels.values()) or len(trainer.domains) < 2:
        return BalancedSampler(trainer.train_cells, plan.batch_size, rng)
    labels = {k: v.cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for k, v in labels.items()}
    return LabelMatchedSampler(trainer.train_cells, labels, plan.batch_size, rng)


#: builds a run's minibatch sampler from its :class:`Trainer` (see :func:`default_sampler`)
SamplerFactory = Callable[["Trainer"], BalancedSampler]
