"""Latent alignment losses, selected by name through :func:`get_aligner`.

An aligner receives the latent means of one minibatch per domain and returns a
scalar that is small when the domains' latent distributions coincide. Losses for
more than two domains are the mean over all domain pairs.

=============== ==================================================================
name            loss
=============== ==================================================================
``adversarial`` a latent domain discriminator trained in alternation with the
                encoders; the encoders minimise KL(uniform || discriminator
                output), i.e. they are rewarded for making it guess at chance
                (optionally conditioned on shared labels, Yang et al. 2021)
``wasserstein`` entropic optimal transport (Sinkhorn) between the batches,
                debiased into a Sinkhorn divergence by default; optionally
                unbalanced (relaxed marginals) for unequal cell-type proportions
``mmd``         maximum mean discrepancy with a multi-scale Gaussian kernel
``none``        zero: the baseline with independent autoencoders
=============== ==================================================================

Supervision that can be mixed with any aligner lives here too:
:class:`LabelClassifier` (shared labels) and :func:`anchor_loss` (known pairs).

Scale: the Wasserstein cost and the MMD bandwidths are measured relative to the
batch's typical squared distance, so these losses cannot be lowered by shrinking
the whole latent space, and one ``reg`` or bandwidth set suits any latent size.
The normalisers keep their gradient: detached, they make shrinking the latent a
way to lower the loss, so the gradient gains a radial part that pulls every cell
towards every other (on sci-CAR, unsupervised ``wasserstein`` collapsed to the
mean that way); attached, the loss is exactly scale-invariant and its gradient
has no radial component.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar

import ot
import torch
import torch.nn.functional as F
from torch import nn

from .nn.mlp import MLP

__all__ = [
    "ALIGNERS",
    "AdversarialAligner",
    "Aligner",
    "LabelClassifier",
    "MMDAligner",
    "NoAligner",
    "SinkhornAligner",
    "anchor_loss",
    "get_aligner",
    "mmd",
    "register_aligner",
    "sinkhorn_loss",
    "squared_distances",
]

Labels = Sequence[torch.Tensor | None] | None

ALIGNERS: dict[str, type[Aligner]] = {}


def register_aligner(cls: type[Aligner]) -> type[Aligner]:
    """Class decorator adding an aligner to the registry under ``cls.name``."""
    ALIGNERS[cls.name] = cls
    return cls


def get_aligner(name: str, *, latent_dim: int, n_domains: int, n_labels: int = 0, **kwargs) -> Aligner:
    """Build the aligner registered as ``name``.

    Parameters
    ----------
    name
        One of ``"adversarial"``, ``"wasserstein"``, ``"mmd"``, ``"none"`` (or any
        name added with :func:`register_aligner`).
    latent_dim, n_domains, n_labels
        Shape information; only the adversarial aligner uses it.
    **kwargs
        Options of the aligner class (see each class).
    """
    if name not in ALIGNERS:
        raise ValueError(f"unknown alignment {name!r}; choose from {sorted(ALIGNERS)}")
    return ALIGNERS[name](latent_dim=latent_dim, n_domains=n_domains, n_labels=n_labels, **kwargs)


#: cost-matrix entries below which a Sinkhorn solve runs on one thread (256 x 256 cells)
SERIAL_OT_ENTRIES = 256 * 256


@contextlib.contextmanager
def serial_below(entries: int, limit: int = SERIAL_OT_ENTRIES) -> Iterator[None]:
    """Run the block on one torch thread when a problem has at most ``limit`` entries.

    A Sinkhorn iteration on a 128 x 128 cost matrix is a few microseconds of arithmetic
    per operation; spread over threads, every one of its ~2,000 small operations per
    solve waits for the threads to wake and meet (2.5x slower on 2 cores with
    ``OMP_WAIT_POLICY=PASSIVE``, far worse with spinning threads on a shared CPU).
    """
    threads = torch.get_num_threads()
    if entries > limit or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances, ``(len(x), len(y))``.

    Written out rather than ``torch.cdist(...) ** 2`` because the square root in
    ``cdist`` has an undefined gradient at zero distance (identical cells).
    """
    d = (x * x).sum(1, keepdim=True) + (y * y).sum(1).unsqueeze(0) - 2.0 * x @ y.T
    return d.clamp_min(0.0)


def mean_over_pairs(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], latents: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean of ``fn(z_i, z_j)`` over all unordered domain pairs ``i < j``."""
    pairs = list(itertools.combinations(range(len(latents)), 2))
    if not pairs:
        return latents[0].sum() * 0.0
    return torch.stack([fn(latents[i], latents[j]) for i, j in pairs]).mean()


class Aligner(nn.Module):
    """Base class: ``forward(latents, labels)`` returns the encoders' alignment loss."""

    name: ClassVar[str]
    #: whether :meth:`critic_loss` must be minimised in alternation with the encoders
    adversarial: ClassVar[bool] = False

    def __init__(self, *, latent_dim: int, n_domains: int, n_labels: int = 0):
        super().__init__()
        self.latent_dim = latent_dim
        self.n_domains = n_domains
        self.n_labels = n_labels

    def forward(self, latents: Sequence[torch.Tensor], labels: Labels = None) -> torch.Tensor:
        raise NotImplementedError

    def critic_parameters(self) -> list[nn.Parameter]:
        """Parameters optimised against the encoders (none except for adversarial aligners)."""
        return []

    def critic_loss(self, latents: Sequence[torch.Tensor], labels: Labels = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and accuracy of the critic; only adversarial aligners have one."""
        raise NotImplementedError(f"the {self.name!r} aligner has no critic")


@register_aligner
class NoAligner(Aligner):
    """No alignment (the baseline): the loss is zero."""

    name = "none"

    def forward(self, latents, labels=None):
        return latents[0].sum() * 0.0


def sinkhorn_loss(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    reg: float = 0.05,
    debias: bool = True,
    unbalanced: bool = False,
    reg_m: float = 1.0,
    normalize_cost: bool = True,
    max_iter: int = 200,
    tol: float = 1e-6,
    labels_x: torch.Tensor | None = None,
    labels_y: torch.Tensor | None = None,
    label_cost: float = 0.0,
) -> torch.Tensor:
    """Entropic OT loss between two point clouds with uniform weights, differentiable.

    The transport problem between ``x`` and ``y`` is solved by POT (see
    :func:`_solve_pot`) and the two debiasing self-problems by a symmetric
    log-domain Sinkhorn (:func:`_solve_log_domain`), all on detached costs; the
    gradient is attached by the envelope theorem, ``d OT / d C = P*``, which is
    exact at convergence and avoids back-propagating through the iterations.

    Parameters
    ----------
    x, y
        Latent batches ``(n, d)`` and ``(m, d)``.
    reg
        Entropic regularisation epsilon, relative to the cost scale when
        ``normalize_cost`` (larger: smoother, blurrier matching).
    debias
        Return the Sinkhorn divergence ``OT(x, y) - (OT(x, x) + OT(y, y)) / 2``,
        which is zero for identical batches; otherwise the plain Sinkhorn loss
        ``OT(x, y)``, whose entropic bias keeps it above zero.
    unbalanced
        Relax the marginal constraints with KL penalties of weight ``reg_m``,
        so mass need not be fully transported when the domains have different
        cell-type proportions.
    reg_m
        Marginal relaxation (smaller: more relaxed); only with ``unbalanced``.
    normalize_cost
        Divide the squared-distance cost by its mean over the ``x``-``y`` pairs,
        so the loss is invariant to the latent scale (the mean keeps its
        gradient, see the module docstring).
    max_iter, tol
        Sinkhorn iteration budget and stopping threshold.
    labels_x, labels_y, label_cost
        Label-conditioned OT: integer label codes of the cells (``-1``: unknown)
        and a constant added to the (normalised) cost of moving mass between two
        cells whose known labels differ, so the plan matches cells within labels.
        ``label_cost=0`` (default) or missing labels: plain OT. The penalty is a
        constant, so it changes the plan (and hence the gradient) but has no
        gradient itself.
    """
    if label_cost < 0:
        raise ValueError(f"label_cost must be >= 0, got {label_cost}")
    c_xy = squared_distances(x, y)
    scale = c_xy.mean().clamp_min(1e-12) if normalize_cost else x.new_tensor(1.0)
    rho = float(reg_m) if unbalanced else math.inf
    use_labels = label_cost > 0 and labels_x is not None and labels_y is not None

    def penalised(cost: torch.Tensor, la, lb) -> torch.Tensor:
        if not use_labels:
            return cost
        return cost + label_cost * label_mismatch(la, lb).to(cost.dtype)

    c_xy = penalised(c_xy / scale, labels_x, labels_y)
    with serial_below(c_xy.numel()):
        loss = _with_envelope_gradient(c_xy, _solve_pot(c_xy.detach(), reg=reg, rho=rho, max_iter=max_iter, tol=tol))
        if debias:
            for z, lab in ((x, labels_x), (y, labels_y)):
                c_zz = penalised(squared_distances(z, z) / scale, lab, lab)
                self_term = _with_envelope_gradient(
                    c_zz, _solve_log_domain(c_zz.detach(), reg=reg, rho=rho, max_iter=max_iter, tol=tol, symmetric=True)
                )
                loss = loss - 0.5 * self_term
    return loss


def label_mismatch(labels_x: torch.Tensor, labels_y: torch.Tensor) -> torch.Tensor:
    """``(n, m)`` bool: both labels known (``>= 0``) and different."""
    lx, ly = labels_x[:, None], labels_y[None, :]
    return (lx != ly) & (lx >= 0) & (ly >= 0)


def _with_envelope_gradient(cost: torch.Tensor, solution: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """OT value whose gradient with respect to ``cost`` is the optimal plan (envelope theorem)."""
    plan, value = solution
    plan = plan.to(cost.dtype)
    return value.to(cost.dtype) + (plan * (cost - cost.detach())).sum()


def _uniform(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.full((n,), 1.0 / n, dtype=torch.float64, device=like.device)


def _solve_pot(cost: torch.Tensor, *, reg: float, rho: float, max_iter: int, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimal plan and objective of (unbalanced if ``rho`` is finite) entropic OT, solved by POT.

    Balanced problems use POT's log-domain Sinkhorn (``ot.solve``); unbalanced
    ones POT's scaling algorithm in float64 (its "stabilised" variant diverges
    on some well-separated batches), falling back to the log-domain iteration
    of :func:`_solve_log_domain` if the scalings underflow.
    """
    c64 = cost.double()
    a, b = _uniform(c64.shape[0], c64), _uniform(c64.shape[1], c64)
    with warnings.catch_warnings():
        # the iteration budget is capped on purpose: a nearly converged plan still gives a
        # descent direction, and a warning per minibatch would drown the training log
        warnings.filterwarnings("ignore", message=".*(converge|overflow|divide|invalid|Numerical).*")
        if math.isinf(rho):
            res = ot.solve(c64, a, b, reg=reg, max_iter=max_iter, tol=tol, grad="detach")
            return res.plan, res.value
        plan = ot.unbalanced.sinkhorn_unbalanced(a, b, c64, reg, rho, method="sinkhorn", numItermax=max_iter, stopThr=tol)
    if not bool(torch.isfinite(plan).all()) or float(plan.sum()) > 10.0:
        return _solve_log_domain(cost, reg=reg, rho=rho, max_iter=max_iter, tol=tol, symmetric=False)
    return plan, entropic_objective(plan, a, b, c64, reg=reg, rho=rho)


def _solve_log_domain(
    cost: torch.Tensor, *, reg: float, rho: float, max_iter: int, tol: float, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-domain Sinkhorn for uniform weights, balanced or KL-unbalanced.

    With ``symmetric=True`` (a point cloud against itself, the debiasing terms)
    it runs the averaged iteration ``f <- (f + T(f)) / 2`` of Feydy et al.
    (2019): plain alternating Sinkhorn oscillates on symmetric problems and needs
    hundreds of iterations, the averaged one converges in a few.
    """
    c64 = cost.double()
    n, m = c64.shape
    log_a = torch.full((n,), -math.log(n), dtype=torch.float64, device=c64.device)
    log_b = torch.full((m,), -math.log(m), dtype=torch.float64, device=c64.device)
    # KL-relaxed marginals shrink each Sinkhorn update by rho / (rho + reg)
    damping = 1.0 if math.isinf(rho) else rho / (rho + reg)

    def update(potential, log_w, c):
        return -damping * reg * torch.logsumexp(log_w[None, :] + (potential[None, :] - c) / reg, dim=1)

    f = torch.zeros(n, dtype=torch.float64, device=c64.device)
    g = torch.zeros(m, dtype=torch.float64, device=c64.device)
    for _ in range(max_iter):
        if symmetric:
            f_new = 0.5 * (f + update(f, log_a, c64))
            g_new = f_new
        else:
            f_new = update(g, log_b, c64)
            g_new = update(f_new, log_a, c64.T)
        done = max(float((f_new - f).abs().max()), float((g_new - g).abs().max())) < tol
        f, g = f_new, g_new
        if done:
            break
    plan = torch.exp(log_a[:, None] + log_b[None, :] + (f[:, None] + g[None, :] - c64) / reg)
    return plan, entropic_objective(plan, log_a.exp(), log_b.exp(), c64, reg=reg, rho=rho)


def _kl_div(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Generalised KL divergence between non-negative measures, ``sum p log(p/q) - p + q``."""
    return (torch.xlogy(p, p) - torch.xlogy(p, q) - p + q).sum()


def entropic_objective(plan, a, b, cost, *, reg: float, rho: float = math.inf) -> torch.Tensor:
    """Primal objective of KL-regularised OT at ``plan`` (POT's convention).

    ``<P, C> + reg KL(P | a b^T)``, plus ``rho (KL(P 1 | a) + KL(P^T 1 | b))``
    for unbalanced OT (finite ``rho``).
    """
    value = (plan * cost).sum() + reg * _kl_div(plan, a[:, None] * b[None, :])
    if not math.isinf(rho):
        value = value + rho * (_kl_div(plan.sum(1), a) + _kl_div(plan.sum(0), b))
    return value


@register_aligner
class SinkhornAligner(Aligner):
    """Minibatch entropic optimal transport between every pair of domains.

    Options are those of :func:`sinkhorn_loss` (``reg``, ``debias``, ``unbalanced``,
    ``reg_m``, ``normalize_cost``, ``max_iter``, ``tol``, ``label_cost``). With
    ``label_cost > 0`` the transport is label-conditioned: moving mass between
    cells with different known shared labels costs ``label_cost`` extra (in units
    of the mean normalised cost), so cells are matched within labels; cells without
    labels (or domains without any) are matched by distance alone.

    ``ot_batch`` (default 128, the batch size every default was measured at) caps the
    cells of one transport problem: larger batches are cut into blocks of at most that
    many cells per domain, block ``i`` of one domain transported to block ``i`` of the
    other, and the losses averaged. Minibatch OT is
    biased by its minibatch size, so the blocks keep the loss the one the defaults were
    tuned with (a larger batch only averages more of them), and a Sinkhorn solve costs
    ``batch^2`` per iteration, so blocks keep its cost per cell fixed: whole 512-cell
    problems made a million-cell epoch 2-3x slower. Blocks are strided (rows ``b, b + k,
    b + 2k, ...`` of ``k`` blocks) after ordering each domain's rows by label when it has
    labels, so every block holds the batch's label composition: label-matched batches
    stay matched block by block, and prior partners (same row in every domain) stay in
    the same block when there are no labels.
    """

    name = "wasserstein"

    def __init__(
        self,
        *,
        latent_dim: int,
        n_domains: int,
        n_labels: int = 0,
        reg: float = 0.05,
        debias: bool = True,
        unbalanced: bool = False,
        reg_m: float = 1.0,
        normalize_cost: bool = True,
        max_iter: int = 200,
        tol: float = 1e-6,
        label_cost: float = 0.0,
        ot_batch: int = 128,
    ):
        super().__init__(latent_dim=latent_dim, n_domains=n_domains, n_labels=n_labels)
        if ot_batch < 2:
            raise ValueError(f"ot_batch must be >= 2, got {ot_batch}")
        if reg <= 0:
            raise ValueError(f"reg must be positive, got {reg}")
        if label_cost < 0:
            raise ValueError(f"label_cost must be >= 0, got {label_cost}")
        self.options = dict(
            reg=float(reg), debias=bool(debias), unbalanced=bool(unbalanced), reg_m=float(reg_m),
            normalize_cost=bool(normalize_cost), max_iter=int(max_iter), tol=float(tol),
        )
        self.label_cost = float(label_cost)
        self.ot_batch = int(ot_batch)

    def forward(self, latents, labels=None):
        pairs = list(itertools.combinations(range(len(latents)), 2))
        if not pairs:
            return latents[0].sum() * 0.0
        with_labels = self.label_cost > 0 and labels is not None
        losses = []
        for i, j in pairs:
            lab_i, lab_j = (labels[i], labels[j]) if labels is not None else (None, None)
            for rows_i, rows_j in aligned_blocks(len(latents[i]), len(latents[j]), self.ot_batch, lab_i, lab_j):
                options = dict(self.options)
                if with_labels and lab_i is not None and lab_j is not None:
                    options.update(labels_x=_rows_of(lab_i, rows_i), labels_y=_rows_of(lab_j, rows_j), label_cost=self.label_cost)
                losses.append(sinkhorn_loss(_rows_of(latents[i], rows_i), _rows_of(latents[j], rows_j), **options))
        return torch.stack(losses).mean()


def _rows_of(t: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    # the tensor itself for a whole batch: even a full slice adds an autograd node, which
    # reorders how gradients are summed and changes training in the last bits
    return t if rows is None else t[rows]


def aligned_blocks(
    n: int, m: int, size: int, labels_a: torch.Tensor | None = None, labels_b: torch.Tensor | None = None
) -> list[tuple[torch.Tensor | None, torch.Tensor | None]]:
    """Rows of two batches (``n`` and ``m`` rows) cut into the same number of blocks of at most
    ``size`` rows each: ``[(rows_a, rows_b), ...]``; ``[(None, None)]`` (all rows) when both fit.

    Blocks are strided over each batch's rows ordered by label (when given; stable, so rows
    without labels keep their order), so every block has about the batch's label composition.
    """
    k = max(1, math.ceil(max(n, m) / size))
    if k == 1:
        return [(None, None)]

    def order(count: int, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is None:
            return torch.arange(count)
        return torch.sort(labels.detach().cpu(), stable=True).indices

    a, b = order(n, labels_a), order(m, labels_b)
    return [(a[block::k], b[block::k]) for block in range(k)]


def mmd(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    scales: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
    unbiased: bool = False,
) -> torch.Tensor:
    """Squared maximum mean discrepancy with a multi-scale Gaussian kernel.

    ``k(u, v) = mean_s exp(-|u - v|^2 / (s * m))`` where ``m`` is the median
    pairwise squared distance of the pooled batch, so the bandwidths follow the
    data's scale and the loss is scale-invariant (the median keeps its gradient,
    see the module docstring).

    Parameters
    ----------
    x, y
        Batches ``(n, d)`` and ``(m, d)``.
    scales
        Bandwidths relative to the median squared distance.
    unbiased
        ``False`` (default): the biased V-statistic, which includes the kernel
        diagonal, is never negative and is exactly zero for identical batches.
        ``True``: the unbiased U-statistic without diagonal terms; its
        expectation is the population MMD^2 but single batches can be negative.
    """
    pooled = torch.cat([x, y])
    d = squared_distances(pooled, pooled)
    off_diag = d[~torch.eye(len(pooled), dtype=torch.bool, device=d.device)]
    median = off_diag.median().clamp_min(1e-12)
    k = torch.stack([torch.exp(-d / (s * median)) for s in scales]).mean(0)
    n = len(x)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    if unbiased:
        m = len(y)
        if n < 2 or m < 2:
            raise ValueError("the unbiased MMD needs at least two cells per batch")
        sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        return sxx + syy - 2 * kxy.mean()
    return kxx.mean() + kyy.mean() - 2 * kxy.mean()


@register_aligner
class MMDAligner(Aligner):
    """Maximum mean discrepancy between every pair of domains (see :func:`mmd`)."""

    name = "mmd"

    def __init__(
        self,
        *,
        latent_dim: int,
        n_domains: int,
        n_labels: int = 0,
        scales: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
        unbiased: bool = False,
    ):
        super().__init__(latent_dim=latent_dim, n_domains=n_domains, n_labels=n_labels)
        self.scales = tuple(float(s) for s in scales)
        self.unbiased = bool(unbiased)

    def forward(self, latents, labels=None):
        return mean_over_pairs(lambda x, y: mmd(x, y, scales=self.scales, unbiased=self.unbiased), latents)


@register_aligner
class AdversarialAligner(Aligner):
    """Latent domain discriminator trained in alternation with the encoders.

    The discriminator (an MLP) predicts each latent vector's domain and is
    trained with cross-entropy (:meth:`critic_loss`). The encoders minimise
    ``KL(uniform || p(domain | z))`` averaged over cells (:meth:`forward`),
    which is zero when the discriminator cannot tell the domains apart; unlike
    maximising the discriminator's loss it stays bounded and has no incentive
    to make the discriminator confidently wrong.

    Parameters
    ----------
    conditional
        Also give the discriminator the one-hot shared label of each cell (zeros
        when unknown), so it compares domains within each label: the conditional
        variant of Yang et al. (2021), which aligns cell types with cell types
        rather than only the marginal distributions.
    hidden_dims, dropout, norm
        Discriminator architecture. Dropout in the discriminator (and its
        slower learning rate, see :class:`~cellbridge.training.TrainingPlan`)
        keeps it from becoming confident enough to overpower the encoders: on
        the demo, without them the game collapses after ~20 epochs.
    gradient_penalty
        Weight ``gamma`` of a gradient penalty on the discriminator,
        ``gamma / 2 * E ||grad_z CE(D(z), domain)||^2`` over the batch's latents
        (the R1 regulariser of Mescheder et al., 2018, applied to every domain,
        since no domain is the "real" one here). A discriminator with small input
        gradients changes smoothly across the latent, so the encoders follow a
        steadier signal instead of the last batch's accident; on the demo (latent
        8, five seeds) ``gamma`` 1 and 3 lowered the mean held-out FOSCTTM from
        0.117 to 0.107 and 0.104. 0 (default) turns it off.
    """

    name = "adversarial"
    adversarial = True

    def __init__(
        self,
        *,
        latent_dim: int,
        n_domains: int,
        n_labels: int = 0,
        conditional: bool = False,
        hidden_dims: Sequence[int] = (128, 128),
        dropout: float = 0.3,
        norm: str = "none",
        gradient_penalty: float = 0.0,
    ):
        super().__init__(latent_dim=latent_dim, n_domains=n_domains, n_labels=n_labels)
        if conditional and n_labels == 0:
            raise ValueError("a conditional discriminator needs shared labels (set label_key)")
        if gradient_penalty < 0:
            raise ValueError(f"gradient_penalty must be >= 0, got {gradient_penalty}")
        self.conditional = bool(conditional)
        self.gradient_penalty = float(gradient_penalty)
        in_dim = latent_dim + (n_labels if conditional else 0)
        self.body = MLP(in_dim, hidden_dims, dropout=dropout, norm=norm)
        self.out = nn.Linear(self.body.out_dim, n_domains)

    def critic_parameters(self):
        return list(self.parameters())

    def _logits_and_targets(self, latents, labels) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.cat(list(latents))
        if self.conditional:
            if labels is None:
                raise ValueError("the conditional discriminator needs the cells' labels")
            onehots = [
                label_onehot(lab, self.n_labels) if lab is not None else z.new_zeros(len(zz), self.n_labels)
                for lab, zz in zip(labels, latents)
            ]
            z = torch.cat([z, torch.cat(onehots).to(z.dtype)], 1)
        targets = torch.cat([torch.full((len(zz),), i, dtype=torch.long, device=z.device) for i, zz in enumerate(latents)])
        return self.out(self.body(z)), targets

    def critic_loss(self, latents, labels=None):
        """Cross-entropy of the discriminator on (detached) latents, and its accuracy.

        With ``gradient_penalty > 0`` and gradients enabled (training, not validation),
        the penalty on the discriminator's input gradients is added to the loss.
        """
        penalise = self.gradient_penalty > 0 and torch.is_grad_enabled()
        inputs = [zz.detach().requires_grad_(penalise) for zz in latents]
        logits, targets = self._logits_and_targets(inputs, labels)
        acc = (logits.argmax(1) == targets).float().mean()
        # weight cells so every domain counts equally whatever its batch size
        weights = 1.0 / torch.bincount(targets, minlength=self.n_domains).clamp_min(1).float()
        per_cell = F.cross_entropy(logits, targets, reduction="none")
        loss = (per_cell * weights[targets]).sum() / len(latents)
        if penalise:
            grads = torch.autograd.grad(per_cell.sum(), inputs, create_graph=True)
            loss = loss + 0.5 * self.gradient_penalty * torch.cat(grads).pow(2).sum(1).mean()
        return loss, acc.detach()

    def forward(self, latents, labels=None):
        logits, _ = self._logits_and_targets(latents, labels)
        # KL(uniform || p) = -mean_k log p_k - log K
        return -F.log_softmax(logits, dim=1).mean(1).mean() - math.log(self.n_domains)


def label_onehot(labels: torch.Tensor, n_labels: int) -> torch.Tensor:
    """One-hot encoding with all-zero rows for unknown labels (code ``-1``)."""
    known = labels >= 0
    out = torch.zeros(len(labels), n_labels, device=labels.device)
    out[known] = F.one_hot(labels[known], n_labels).float()
    return out


class LabelClassifier(nn.Module):
    """Linear label head on the latent, shared by every domain.

    Sharing the head means a label must be decodable from the same latent region
    in every domain, which pulls matching cell types together across domains.
    The latent is centred and divided by its root-mean-square distance from the
    centre (statistics of the pooled batch, detached) before the linear layer:
    the decoders are free to work at any latent scale, and without this a
    shrinking latent would leave the head with vanishing logits and a slow start.
    """

    def __init__(self, latent_dim: int, n_labels: int):
        super().__init__()
        self.linear = nn.Linear(latent_dim, n_labels)

    def forward(self, z: torch.Tensor, *, reference: torch.Tensor | None = None) -> torch.Tensor:
        """Label logits of ``z``; ``reference`` (default ``z``) gives the standardisation statistics."""
        ref = (z if reference is None else reference).detach()
        centre = ref.mean(0)
        rms = ((ref - centre) ** 2).sum(1).mean().sqrt().clamp_min(1e-8)
        return self.linear((z - centre) / rms)

    def loss(
        self, latents: Sequence[torch.Tensor], labels: Sequence[torch.Tensor | None], *, smoothing: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy over cells with a known label (code >= 0) and the accuracy on them.

        ``smoothing``: label smoothing of the cross-entropy (the one-hot target
        is mixed with the uniform distribution, weight ``smoothing`` on the
        uniform). Unsmoothed, the loss keeps falling as the labels move apart
        relative to the spread within them: the head drives the labels into
        islands whose inner structure shrinks to a few percent of the latent
        variance (3% for RNA on the demo), and that inner structure (activation
        within a cell type) is what matching cells within a label needs.
        Smoothed, the loss is minimal at a finite separation.

        Returns zero (and NaN accuracy) when no cell in the batch has a label.
        """
        zs = [z for z, lab in zip(latents, labels) if lab is not None]
        labs = [lab for lab in labels if lab is not None]
        if not labs:
            return latents[0].sum() * 0.0, latents[0].new_tensor(float("nan"))
        z, y = torch.cat(zs), torch.cat(labs)
        known = y >= 0
        if not known.any():
            return z.sum() * 0.0, z.new_tensor(float("nan"))
        logits = self(z[known], reference=z)
        acc = (logits.argmax(1) == y[known]).float().mean().detach()
        return F.cross_entropy(logits, y[known], label_smoothing=smoothing), acc


def anchor_loss(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """Squared latent distance between anchor partners, relative to non-partners.

    ``mean_i |z_a[i] - z_b[i]|^2 / mean_{i,j} |z_a[i] - z_b[j]|^2``: the ratio cannot
    be lowered by shrinking the latent space, only by bringing partners closer than
    random pairs. The denominator keeps its gradient on purpose: detached, the
    gradient of the ratio pulls every cell towards every other, and on weak data
    (sci-CAR) the latent collapsed to a point and the autoencoders to the mean.
    """
    partner = ((z_a - z_b) ** 2).sum(1).mean()
    typical = squared_distances(z_a, z_b).mean().clamp_min(1e-12)
    return partner / typical
