"""Alignment losses: zero for identical batches, larger for shifted ones, order-invariant, finite gradients."""

import math

import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cellbridge.align import (
    ALIGNERS,
    LabelClassifier,
    anchor_loss,
    get_aligner,
    mmd,
    sinkhorn_loss,
    squared_distances,
)

torch.set_num_threads(1)

# (name, options, exactly zero on identical batches)
DIVERGENCES = [
    ("wasserstein", {}, True),
    ("wasserstein", {"unbalanced": True, "reg_m": 0.5}, True),
    ("wasserstein", {"debias": False}, False),
    ("mmd", {}, True),
    ("mmd", {"unbiased": True}, False),
]
IDS = ["sinkhorn-divergence", "unbalanced", "plain-sinkhorn", "mmd-biased", "mmd-unbiased"]


def _batch(seed: int, n: int = 48, d: int = 4) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


def _aligner(name, options, n_domains=2):
    return get_aligner(name, latent_dim=4, n_domains=n_domains, **options)


@pytest.mark.parametrize("name,options,exact", DIVERGENCES, ids=IDS)
@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), shift=st.floats(1.0, 4.0))
def test_divergence_properties(name, options, exact, seed, shift):
    aligner = _aligner(name, options)
    x, y = _batch(seed), _batch(seed + 1)
    same = float(aligner([x, x.clone()]))
    shifted = float(aligner([x, y + shift]))
    if exact:
        assert abs(same) < 1e-4
    assert shifted > same + 1e-3
    # larger shifts cost more
    assert float(aligner([x, y + 2 * shift])) > shifted
    # invariant to the order of the cells within each batch
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    assert float(aligner([x[perm], (y + shift).flip(0)])) == pytest.approx(shifted, rel=1e-3, abs=1e-4)


@pytest.mark.parametrize("name,options,exact", DIVERGENCES, ids=IDS)
def test_divergence_gradients_finite_and_descending(name, options, exact):
    aligner = _aligner(name, options)
    x = _batch(0).requires_grad_(True)
    y = _batch(1) + 2.0
    opt = torch.optim.Adam([x], lr=0.1)
    first = None
    for _ in range(30):
        loss = aligner([x, y])
        opt.zero_grad()
        loss.backward()
        assert torch.isfinite(x.grad).all()
        opt.step()
        first = float(loss.detach()) if first is None else first
    assert float(aligner([x, y])) < 0.5 * first
    # identical points (zero distances) still give finite gradients
    z = _batch(2).requires_grad_(True)
    aligner([z, z]).backward()
    assert torch.isfinite(z.grad).all()


def test_sinkhorn_matches_pot_autodiff():
    """Envelope-theorem gradient and symmetric self-terms agree with differentiating POT's solver."""
    x = torch.randn(15, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    y = torch.randn(15, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) + 1
    w = torch.full((15,), 1 / 15, dtype=torch.float64)

    def pot(a, b):
        return ot.solve(squared_distances(a, b), w, w, reg=0.5, tol=1e-12, max_iter=10_000, grad="autodiff").value

    reference = pot(x, y) - 0.5 * (pot(x, x) + pot(y, y))
    (g_ref,) = torch.autograd.grad(reference, x)
    ours = sinkhorn_loss(x, y, reg=0.5, normalize_cost=False, tol=1e-12, max_iter=10_000)
    (g_ours,) = torch.autograd.grad(ours, x)
    assert float(ours) == pytest.approx(float(reference), rel=1e-6)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-7)


def test_normalised_costs_are_scale_invariant():
    x, y = _batch(0), _batch(1) + 1
    for fn in (sinkhorn_loss, mmd):
        assert float(fn(10 * x, 10 * y)) == pytest.approx(float(fn(x, y)), rel=1e-3)


def test_unbalanced_tolerates_proportion_shift():
    """With relaxed marginals, different cluster proportions cost less than with balanced OT."""
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [6.0, 0.0]])
    a = torch.cat([centres[0] + 0.3 * torch.randn(40, 2, generator=gen), centres[1] + 0.3 * torch.randn(40, 2, generator=gen)])
    b = torch.cat([centres[0] + 0.3 * torch.randn(70, 2, generator=gen), centres[1] + 0.3 * torch.randn(10, 2, generator=gen)])
    balanced = float(sinkhorn_loss(a, b))
    relaxed = float(sinkhorn_loss(a, b, unbalanced=True, reg_m=0.05))
    assert relaxed < 0.5 * balanced


def test_mmd_unbiased_is_centered():
    vals = [float(mmd(_batch(s), _batch(s + 1000), unbiased=True)) for s in range(20)]
    biased = [float(mmd(_batch(s), _batch(s + 1000))) for s in range(20)]
    assert min(vals) < 0 < max(vals)
    assert abs(np.mean(vals)) < np.mean(biased)


def test_none_is_zero():
    aligner = _aligner("none", {})
    x = _batch(0).requires_grad_(True)
    loss = aligner([x, _batch(1) + 5])
    assert float(loss) == 0.0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_three_domains_average_pairs():
    aligner = _aligner("mmd", {}, n_domains=3)
    x, y, z = _batch(0), _batch(1) + 1, _batch(2) + 2
    pairs = [float(mmd(a, b)) for a, b in ((x, y), (x, z), (y, z))]
    assert float(aligner([x, y, z])) == pytest.approx(np.mean(pairs), rel=1e-5)


def _train_discriminator(aligner, latents, labels=None, steps=150):
    opt = torch.optim.Adam(aligner.critic_parameters(), lr=1e-2)
    for _ in range(steps):
        loss, acc = aligner.critic_loss(latents, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(acc)


def test_adversarial_properties():
    torch.manual_seed(0)
    x, y = _batch(0, n=64), _batch(1, n=64)
    shifted = _aligner("adversarial", {})
    acc = _train_discriminator(shifted, [x, y + 2])
    assert acc > 0.95
    identical = _aligner("adversarial", {})
    acc_same = _train_discriminator(identical, [x, x.clone()])
    assert acc_same < 0.75
    # compare in eval mode: the discriminator's dropout makes training-mode outputs random
    shifted.eval()
    identical.eval()
    # the encoders' loss: near zero when the discriminator cannot tell the domains apart
    assert float(identical([x, x.clone()])) < 0.05
    assert float(shifted([x, y + 2])) > 5 * float(identical([x, x.clone()]))
    # order invariance of the encoders' loss
    assert float(shifted([x.flip(0), y + 2])) == pytest.approx(float(shifted([x, y + 2])), rel=1e-5)
    # gradients reach the latents and are finite
    z = x.clone().requires_grad_(True)
    shifted([z, y + 2]).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    # everything the aligner owns is trained against the encoders
    assert {id(p) for p in shifted.critic_parameters()} == {id(p) for p in shifted.parameters()}


def test_conditional_discriminator_uses_labels():
    """Same marginal distribution, labels swapped between the clusters: only a conditional critic sees it."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([0] * 64 + [1] * 64)
    centres = torch.tensor([[0.0] * 4, [5.0] * 4])

    def draw():
        x = centres[labels] + torch.randn(128, 4, generator=gen)
        y = centres[1 - labels] + torch.randn(128, 4, generator=gen)
        return x, y

    x, y = draw()
    marginal = _aligner("adversarial", {"n_labels": 2})
    conditional = _aligner("adversarial", {"conditional": True, "n_labels": 2})
    _train_discriminator(marginal, [x, y], steps=100)
    _train_discriminator(conditional, [x, y], [labels, labels], steps=100)
    # judged on fresh cells (in eval mode), so memorising the training points does not count
    marginal.eval()
    conditional.eval()
    x_new, y_new = draw()
    assert float(marginal.critic_loss([x_new, y_new])[1]) < 0.65
    assert float(conditional.critic_loss([x_new, y_new], [labels, labels])[1]) > 0.95
    # ... and so only the conditional aligner asks the encoders to move
    assert float(conditional([x_new, y_new], [labels, labels])) > 5 * float(marginal([x_new, y_new]))
    with pytest.raises(ValueError, match="label"):
        _aligner("adversarial", {"conditional": True})
    with pytest.raises(ValueError, match="labels"):
        conditional.critic_loss([x, y])



def _input_gradient_norm(aligner, latents) -> float:
    """Mean squared norm of the discriminator's cross-entropy gradient at the latents (eval mode)."""
    aligner.eval()
    inputs = [z.clone().requires_grad_(True) for z in latents]
    logits, targets = aligner._logits_and_targets(inputs, None)
    grads = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"), inputs)
    return float(torch.cat(grads).pow(2).sum(1).mean())


def test_gradient_penalty_smooths_the_discriminator():
    """The R1 penalty keeps the critic's input gradients small; it still separates the domains."""
    x, y = _batch(0, n=64), _batch(1, n=64) + 1.5
    norms, accs = {}, {}
    for gamma in (0.0, 10.0):
        torch.manual_seed(0)  # same initial weights for both critics
        aligner = _aligner("adversarial", {"gradient_penalty": gamma})
        accs[gamma] = _train_discriminator(aligner, [x, y], steps=200)
        norms[gamma] = _input_gradient_norm(aligner, [x, y])
    assert norms[10.0] < 0.5 * norms[0.0]
    assert accs[10.0] > 0.8
    # the penalty is part of the training loss only: validation (no grad) reports the plain cross-entropy
    with torch.no_grad():
        plain, _ = aligner.critic_loss([x, y])
    penalised, _ = aligner.critic_loss([x, y])
    assert float(penalised) > float(plain)
    with pytest.raises(ValueError, match="gradient_penalty"):
        _aligner("adversarial", {"gradient_penalty": -1.0})

def test_registry():
    assert {"adversarial", "wasserstein", "mmd", "none"} <= set(ALIGNERS)
    with pytest.raises(ValueError, match="adversarial.*mmd.*none.*wasserstein"):
        get_aligner("sinkhorn", latent_dim=4, n_domains=2)
    with pytest.raises(ValueError, match="reg"):
        get_aligner("wasserstein", latent_dim=4, n_domains=2, reg=0)


def test_label_classifier_ignores_unknown_labels():
    torch.manual_seed(0)
    head = LabelClassifier(4, 3)
    z = [_batch(0, n=10), _batch(1, n=10)]
    labels = [torch.tensor([0, 1, 2, -1, -1, 0, 1, 2, -1, 0]), None]
    loss, acc = head.loss(z, labels)
    known = labels[0] >= 0
    ref = torch.nn.functional.cross_entropy(head(z[0][known], reference=torch.cat([z[0]])), labels[0][known])
    assert float(loss) == pytest.approx(float(ref), rel=1e-5)
    assert 0 <= float(acc) <= 1
    none_loss, none_acc = head.loss(z, [torch.full((10,), -1), None])
    assert float(none_loss) == 0.0 and math.isnan(float(none_acc))


def test_label_smoothing_bounds_the_separation_the_head_asks_for():
    """Unsmoothed, the label loss falls without end as two labels move apart; smoothed, it has a finite optimum."""
    gen = torch.Generator().manual_seed(0)
    within = torch.randn(40, 2, generator=gen)
    labels = torch.tensor([0] * 20 + [1] * 20)
    head = LabelClassifier(2, 2)
    with torch.no_grad():  # a head that reads the separating axis with unit weight
        head.linear.weight.copy_(torch.tensor([[-4.0, 0.0], [4.0, 0.0]]))
        head.linear.bias.zero_()

    def loss_at(separation: float, smoothing: float) -> float:
        z = within + torch.where(labels[:, None] == 0, -0.5, 0.5) * torch.tensor([separation, 0.0])
        return float(head.loss([z], [labels], smoothing=smoothing)[0].detach())

    separations = [1.0, 3.0, 10.0, 30.0, 100.0]
    plain = [loss_at(d, 0.0) for d in separations]
    smoothed = [loss_at(d, 0.5) for d in separations]
    assert all(a > b for a, b in zip(plain, plain[1:]))  # always rewards more separation
    best = int(np.argmin(smoothed))
    assert 0 < best < len(separations) - 1 and smoothed[-1] > smoothed[best] + 0.1
    ref = torch.nn.functional.cross_entropy(head(within, reference=within), labels, label_smoothing=0.5)
    assert float(head.loss([within], [labels], smoothing=0.5)[0].detach()) == pytest.approx(float(ref.detach()), rel=1e-6)


def test_anchor_loss():
    x = _batch(0)
    assert float(anchor_loss(x, x)) == 0.0
    y = _batch(1)
    assert float(anchor_loss(x, y)) == pytest.approx(1.0, rel=0.3)  # partners no closer than random pairs
    assert float(anchor_loss(3 * x, 3 * (x + 0.1 * y))) == pytest.approx(float(anchor_loss(x, x + 0.1 * y)), rel=1e-4)


def test_anchor_loss_gradient_does_not_shrink_the_latent():
    # Scale invariance of the value is not enough: the gradient must have no component
    # along z itself (shrinking everything), or training collapses the latent.
    za = _batch(0).clone().requires_grad_(True)
    zb = (_batch(0) + 0.5 * _batch(1)).clone().requires_grad_(True)
    anchor_loss(za, zb).backward()
    radial = float((za.grad * za).sum() + (zb.grad * zb).sum())
    assert radial == pytest.approx(0.0, abs=1e-5)
    assert float(za.grad.norm()) > 1e-3  # but partners are still pulled together


@pytest.mark.parametrize("loss", [sinkhorn_loss, mmd, lambda x, y: sinkhorn_loss(x, y, unbalanced=True)], ids=["sinkhorn", "mmd", "unbalanced"])
def test_alignment_gradient_does_not_shrink_the_latent(loss):
    # Same mechanism as for anchors: a detached normaliser (mean cost, median distance)
    # lets the loss fall by shrinking every latent, a radial gradient that collapsed
    # unsupervised wasserstein on sci-CAR.
    za = _batch(0).clone().requires_grad_(True)
    zb = (_batch(1) + 1.0).clone().requires_grad_(True)
    loss(za, zb).backward()
    radial = float((za.grad * za).sum() + (zb.grad * zb).sum())
    total = float(za.grad.norm() * za.norm() + zb.grad.norm() * zb.norm())
    assert abs(radial) < 1e-4 * total
    assert float(za.grad.norm()) > 1e-4  # the domains are still pulled together


def test_label_conditioned_ot_matches_within_labels():
    """label_cost penalises cross-label transport: a label-swapped mixture costs more, unlabelled cells are unaffected."""
    torch.manual_seed(0)
    x = torch.cat([torch.randn(30, 4) * 0.3 - 2.0, torch.randn(30, 4) * 0.3 + 2.0])
    y = x.clone() + 0.05 * torch.randn_like(x)
    lab = torch.cat([torch.zeros(30), torch.ones(30)]).long()
    swapped = 1 - lab
    plain = float(sinkhorn_loss(x, y))
    same = float(sinkhorn_loss(x, y, labels_x=lab, labels_y=lab, label_cost=5.0))
    crossed = float(sinkhorn_loss(x, y, labels_x=lab, labels_y=swapped, label_cost=5.0))
    assert same == pytest.approx(plain, abs=0.05)
    assert crossed > same + 1.0
    unknown = torch.full_like(lab, -1)
    assert float(sinkhorn_loss(x, y, labels_x=unknown, labels_y=swapped, label_cost=5.0)) == pytest.approx(plain, abs=1e-4)
    with pytest.raises(ValueError, match="label_cost"):
        sinkhorn_loss(x, y, labels_x=lab, labels_y=lab, label_cost=-1.0)


def test_label_conditioned_aligner_uses_labels_and_stays_finite():
    aligner = _aligner("wasserstein", {"label_cost": 2.0})
    x, y = _batch(1).requires_grad_(), _batch(2).requires_grad_()
    lx = torch.arange(48) % 3
    ly = (torch.arange(48) + 1) % 3
    with_labels = aligner([x, y], [lx, ly])
    without = aligner([x, y], None)
    one_unlabelled = aligner([x, y], [lx, None])
    assert float(with_labels) > float(without)
    assert float(one_unlabelled) == pytest.approx(float(without), abs=1e-5)
    with_labels.backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    with pytest.raises(ValueError, match="label_cost"):
        _aligner("wasserstein", {"label_cost": -0.5})


def test_small_transport_problems_run_on_one_thread():
    from cellbridge.align import serial_below

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with serial_below(128 * 128):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with serial_below(1024 * 1024):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_aligned_blocks_cover_every_row_once_with_the_batch_composition():
    from cellbridge.align import aligned_blocks

    assert aligned_blocks(100, 90, 128) == [(None, None)]
    gen = torch.Generator().manual_seed(0)
    labels_a = torch.randint(0, 4, (512,), generator=gen)
    labels_b = labels_a[torch.randperm(512, generator=gen)]  # label-matched: same counts, other order
    blocks = aligned_blocks(512, 512, 128, labels_a, labels_b)
    assert len(blocks) == 4
    for side, labels in ((0, labels_a), (1, labels_b)):
        rows = torch.cat([b[side] for b in blocks])
        assert sorted(rows.tolist()) == list(range(512)) and all(len(b[side]) <= 128 for b in blocks)
    for rows_a, rows_b in blocks:  # each block of one domain has the other's composition, to one cell
        counts_a = torch.bincount(labels_a[rows_a], minlength=4)
        counts_b = torch.bincount(labels_b[rows_b], minlength=4)
        assert (counts_a - counts_b).abs().max() <= 1
    uneven = aligned_blocks(300, 130, 128)
    assert len(uneven) == 3 and sum(len(a) for a, _ in uneven) == 300 and sum(len(b) for _, b in uneven) == 130


def test_sinkhorn_aligner_averages_blocks_beyond_ot_batch():
    from cellbridge.align import SinkhornAligner, aligned_blocks, sinkhorn_loss

    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(256, 4, generator=gen), torch.randn(256, 4, generator=gen) + 0.5
    blocked = SinkhornAligner(latent_dim=4, n_domains=2, ot_batch=128)([x, y])
    expected = torch.stack([sinkhorn_loss(x[a], y[b]) for a, b in aligned_blocks(256, 256, 128)]).mean()
    torch.testing.assert_close(blocked, expected)
    whole = SinkhornAligner(latent_dim=4, n_domains=2, ot_batch=256)([x, y])
    torch.testing.assert_close(whole, sinkhorn_loss(x, y))
    with pytest.raises(ValueError, match="ot_batch"):
        SinkhornAligner(latent_dim=4, n_domains=2, ot_batch=1)
