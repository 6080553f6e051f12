"""The geometric correspondence prior (cellbridge.geometry) and its use in training."""

from __future__ import annotations

import tracemalloc
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from _bench import load_benchmark
from cellbridge.align import anchor_loss
from cellbridge.geometry import (
    DEFAULT_STARTS,
    GW_STARTS,
    CorrespondencePrior,
    DomainGeometry,
    composed_coupling,
    consensus_scores,
    correspondence_priors,
    distance_profile_start,
    distance_quantiles,
    distortion_scores,
    domain_geometry,
    entropic_gw_plan,
    MULTISCALE_K,
    gw_candidates,
    landmark_geodesics,
    pooled_distortion,
    refined_prior,
    representation,
    representations,
    joint_selection,
    select_candidate,
    sinkhorn_plan,
)


def _branches(n: int, rng: np.random.Generator, *, dim: int, sizes=(0.5, 0.3, 0.2)) -> tuple[np.ndarray, np.ndarray]:
    """Three elongated groups of unequal size at unequal distances (a scalene triangle, so
    the geometry has one symmetry-free answer), embedded in ``dim`` dimensions by a random
    rotation: the same geometry a second domain would see through other features."""
    group = rng.choice(3, n, p=sizes)
    corners = np.array([[0.0, 0.0], [3.0, 0.0], [0.8, 1.6]])
    t = rng.random(n)[:, None]
    direction = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, -0.5]])[group]
    plane = corners[group] + 0.6 * t * direction + rng.normal(scale=0.08, size=(n, 2))
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    return np.c_[plane, rng.normal(scale=0.05, size=(n, dim - 2))] @ q, group


def test_representation_standardises_and_reduces():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 80)) * np.linspace(1, 50, 80) + 3
    r = representation(x)
    assert r.shape == (200, 50)
    small = representation(x[:, :10])
    np.testing.assert_allclose(small.std(0), 1.0, rtol=1e-6)
    np.testing.assert_allclose(small.mean(0), 0.0, atol=1e-9)
    counts = sp.random(150, 300, density=0.1, random_state=0, format="csr")
    assert representation(counts, modality="atac", n_components=20).shape == (150, 20)  # first component dropped


def test_scalings_weigh_features_equally_or_as_given():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 4)) * np.array([10.0, 5.0, 1.0, 0.1]) + 7.0
    np.testing.assert_allclose(representation(x, scaling="standardised").std(0), 1.0)
    given = representation(x, scaling="as given")
    np.testing.assert_allclose(given.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(given.std(0), x.std(0))  # centred, each feature at its own scale
    with pytest.raises(ValueError, match="scaling"):
        representation(x, scaling="whitened")


def test_representations_undo_the_features_standardisation_and_share_sparse_views():
    import anndata as ad

    from cellbridge.preprocess.features import prepare_features

    rng = np.random.default_rng(4)
    x = (rng.normal(size=(120, 5)) * np.array([9.0, 4.0, 1.0, 1.0, 0.2])).astype(np.float32)
    for standardize in (True, False):  # standardised by preparation or not, the views are the same
        reps = representations(prepare_features(ad.AnnData(x), standardize=standardize), modality="features")
        np.testing.assert_allclose(reps["standardised"].std(0), 1.0, rtol=1e-5)
        np.testing.assert_allclose(reps["as given"], x - x.mean(0), rtol=1e-4, atol=1e-4)  # the user's values, centred
    counts = ad.AnnData(sp.random(80, 60, density=0.2, random_state=0, format="csr", dtype=np.float32))
    sparse = representations(counts, modality="atac")
    assert sparse["standardised"] is sparse["as given"]  # one view: the prior runs it once
    views = {s: {"a": sparse[s], "b": sparse[s]} for s in sparse}
    (prior,) = correspondence_priors(views, {"a": np.arange(80), "b": np.arange(80)}, n_landmarks=10, k_grid=(10,), n_restarts=1)
    assert [c["view"] for c in prior.candidates] == ["standardised / as given"] * len(DEFAULT_STARTS)


def _noisy_clusters(seed: int, loud: bool) -> tuple[dict, np.ndarray, np.ndarray]:
    """Four clusters of unequal size in 2-d, the same 300 cells in two domains (rows shuffled),
    with extra pure-noise features: many quiet ones, or one loud one per domain."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (4, 2))
    t = rng.choice(4, 300, p=(0.4, 0.3, 0.2, 0.1))
    z = centres[t] + rng.normal(0, 0.7, (300, 2))
    perm = rng.permutation(300)
    if loud:
        xa = np.c_[z @ rng.normal(size=(2, 4)) / 4, rng.normal(0, 30, (300, 1))]
        xb = np.c_[z[perm] @ rng.normal(size=(2, 5)) / 4, rng.normal(0, 30, (300, 1))]
    else:
        xa = np.c_[z @ rng.normal(size=(2, 2)), rng.normal(0, 0.3, (300, 20))]
        xb = np.c_[z[perm] @ rng.normal(size=(2, 3)), rng.normal(0, 0.3, (300, 30))]
    return {"a": xa, "b": xb}, t, t[perm]


def _type_agreement(prior, ta: np.ndarray, tb: np.ndarray) -> float:
    """Probability that a pair drawn from the prior joins two cells of one cluster."""
    p = prior.cell_coupling()
    return float((p / p.sum() * (ta[:, None] == tb[None])).sum())


def test_prior_with_both_scalings_finds_clusters_that_standardising_drowns():
    """Many quiet noise features (as trailing PCA components are): standardised, they are
    blown up to the signal's size; as given, the clusters dominate. With both views the prior
    keeps, on most seeds, the view whose choice distorts least, and agrees with the truth
    far more often than the standardised view alone (6 seeds: 0.63 against 0.39 when written;
    one loud noise feature instead goes the other way: 0.50 against 0.61, 0.53 since the kept
    view's candidates are judged on both views' landmarks; see the README). The views are
    compared on the search's own couplings (``refine=False``): the refinement on every cell
    lifts the standardised view alone more than both (0.63 against 0.49 with it)."""
    both, alone, kept = [], [], []
    for seed in range(6):
        x, ta, tb = _noisy_clusters(seed, loud=False)
        views = {s: {d: representation(v, modality="features", scaling=s) for d, v in x.items()} for s in ("standardised", "as given")}
        cells = {"a": np.arange(300), "b": np.arange(300)}
        options = {"n_landmarks": 50, "k_grid": (10, 20), "n_restarts": 1, "seed": seed, "refine": False}
        (prior,) = correspondence_priors(views, cells, **options)
        both.append(_type_agreement(prior, ta, tb))
        kept.append(next(c["view"] for c in prior.candidates if c["chosen"]))
        (prior,) = correspondence_priors(views["standardised"], cells, **options)
        alone.append(_type_agreement(prior, ta, tb))
    assert np.mean(both) > np.mean(alone) + 0.15, (both, alone)
    assert kept.count("as given") >= 4, kept


def test_landmark_geodesics_are_a_normalised_metric_on_landmarks():
    rng = np.random.default_rng(1)
    x, _ = _branches(300, rng, dim=5)
    d = landmark_geodesics(x, np.arange(0, 300, 10), k=10)
    assert d.shape == (30, 30)
    np.testing.assert_allclose(d, d.T)
    assert np.all(np.diag(d) == 0) and d.max() == pytest.approx(1.0) and d.min() >= 0


def test_prior_recovers_planted_correspondence_between_unrelated_feature_spaces():
    rng = np.random.default_rng(2)
    xa, ba = _branches(600, rng, dim=6)
    xb, bb = _branches(500, rng, dim=12)
    priors = correspondence_priors(
        {"a": representation(xa), "b": representation(xb)}, {"a": np.arange(600), "b": np.arange(500)},
        n_landmarks=60, k_grid=(10, 20, 30), n_restarts=2,
    )
    (prior,) = priors
    # every landmark restart x k x GW start (both by default) is a candidate; one is kept
    assert sorted((c["restart"], c["k"], c["start"]) for c in prior.candidates) == sorted(
        (r, k, s) for r in (0, 1) for k in (10, 20, 30) for s in DEFAULT_STARTS
    )
    assert [c["chosen"] for c in prior.candidates].count(True) == 1
    restricted = prior.restrict(np.arange(600), np.arange(500))
    idx = rng.integers(600, size=2000)
    partners = restricted.partners(idx, rng)
    assert partners.min() >= 0 and partners.max() < 500
    agree = (ba[idx] == bb[partners]).mean()
    assert agree > 0.9  # random partners would agree 0.38 of the time
    coupling = prior.cell_coupling()
    assert coupling.shape == (600, 500) and coupling.sum() == pytest.approx(1.0)


def test_multiscale_candidate_solves_gw_on_the_geodesics_averaged_over_k():
    """One more candidate per start (``k`` = MULTISCALE_K): GW between each domain's mean geodesics
    over its neighbourhood sizes; none with one ``k`` or when switched off."""
    import ot

    rng = np.random.default_rng(5)
    xa, _ = _branches(300, rng, dim=6)
    xb, _ = _branches(280, rng, dim=9)
    ga = domain_geometry(representation(xa), np.arange(300), n_landmarks=40, k_grid=(10, 20, 30))
    gb = domain_geometry(representation(xb), np.arange(280), n_landmarks=40, k_grid=(10, 20, 30))
    cands = gw_candidates(ga, gb, starts=GW_STARTS, multiscale=True)
    assert [(c["k"], c["start"]) for c in cands] == [(k, s) for k in (10, 20, 30) for s in GW_STARTS] + [
        (MULTISCALE_K, s) for s in GW_STARTS
    ]
    multi = cands[-2]
    ca = np.mean([ga.distances[k] for k in (10, 20, 30)], axis=0)
    cb = np.mean([gb.distances[k] for k in (10, 20, 30)], axis=0)
    # a coupling of the landmark weights, with the GW value under the averaged geodesics
    assert multi["coupling"].sum(1) == pytest.approx(ga.weights, abs=1e-4)
    assert multi["coupling"].sum(0) == pytest.approx(gb.weights, abs=1e-4)
    expected = float(ot.gromov.gwloss(*ot.gromov.init_matrix(ca, cb, ga.weights, gb.weights, "square_loss"), multi["coupling"]))
    assert multi["gw"] == pytest.approx(expected, rel=1e-6)
    # GW did its work on the averaged geodesics: far below the product coupling's loss there
    product = np.outer(ga.weights, gb.weights)
    assert multi["gw"] < 0.5 * float(ot.gromov.gwloss(*ot.gromov.init_matrix(ca, cb, ga.weights, gb.weights, "square_loss"), product))
    assert [c["k"] for c in gw_candidates(ga, gb, starts=["product"])] == [10, 20, 30]  # off by default
    one_k = domain_geometry(representation(xa), np.arange(300), n_landmarks=40, k_grid=(10,))
    assert [c["k"] for c in gw_candidates(one_k, one_k, starts=["product"], multiscale=True)] == [10]


def test_refinement_carries_the_kept_coupling_onto_cells_and_sharpens_it():
    """The kept coupling carried onto one landmark per cell (k-means landmarks beyond
    ``n_landmarks`` cells) and descended by GW at a lower entropy: a coupling of the cells'
    weights, sharper and less distorting than the coarse one spread over its landmarks'
    cells, and no less often within the planted groups."""
    import ot

    rng = np.random.default_rng(7)
    xa, group = _branches(240, rng, dim=6)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    xb = xa @ q + rng.normal(scale=0.02, size=xa.shape)  # the same cells through other features: pairs i <-> i
    reps = {"a": representation(xa), "b": representation(xb)}
    cells = {"a": np.arange(240), "b": np.arange(240)}
    (coarse,) = correspondence_priors(reps, cells, n_landmarks=40, k_grid=(10, 20), n_restarts=1, refine=False)
    k = next(c["k"] for c in coarse.candidates if c["chosen"])
    fine = refined_prior(coarse, reps, k)
    assert fine.coupling.shape == (240, 240) and fine.candidates is coarse.candidates
    np.testing.assert_array_equal(fine.geometry_a.assignment, np.arange(240))
    assert fine.coupling.sum(1) == pytest.approx(np.full(240, 1 / 240), abs=1e-4)
    assert fine.coupling.sum(0) == pytest.approx(np.full(240, 1 / 240), abs=1e-4)
    # with a landmark per cell the coupling carried over is the coarse one spread over cells
    before, after = coarse.cell_coupling(), fine.coupling
    (k_fine,) = fine.geometry_a.distances
    geodesics = ot.gromov.init_matrix(fine.geometry_a.distances[k_fine], fine.geometry_b.distances[k_fine],
                                      fine.geometry_a.weights, fine.geometry_b.weights, "square_loss")
    assert ot.gromov.gwloss(*geodesics, after) < ot.gromov.gwloss(*geodesics, before)

    def entropy(plan):
        return -float((plan[plan > 0] * np.log(plan[plan > 0])).sum())

    assert entropy(after) < entropy(before) - 0.5
    same_group = group[:, None] == group[None, :]
    assert (after * same_group).sum() >= (before * same_group).sum() - 0.01
    # more cells than refinement landmarks: k-means landmarks on the same cells
    mid = refined_prior(coarse, reps, k, n_landmarks=100)
    assert mid.coupling.shape == (100, 100) and mid.geometry_b.assignment.shape == (240,)
    # the prior's default gives the same refinement, the candidate table unchanged
    (opt,) = correspondence_priors(reps, cells, n_landmarks=40, k_grid=(10, 20), n_restarts=1)
    np.testing.assert_allclose(opt.coupling, fine.coupling, atol=1e-12)
    assert [c["chosen"] for c in opt.candidates] == [c["chosen"] for c in coarse.candidates]


def test_partners_only_from_allowed_cells():
    rng = np.random.default_rng(3)
    xa, _ = _branches(300, rng, dim=4)
    xb, _ = _branches(300, rng, dim=4)
    (prior,) = correspondence_priors({"a": xa, "b": xb}, {"a": np.arange(300), "b": np.arange(300)}, n_landmarks=30, k_grid=(10,))
    allowed = np.arange(0, 300, 3)
    partners = prior.restrict(np.arange(300), allowed).partners(np.arange(300), rng)
    assert np.isin(partners, allowed).all()
    with pytest.raises(RuntimeError, match="restrict"):
        prior.partners(np.arange(3), rng)


def _block_geometry(points: np.ndarray, size: int) -> DomainGeometry:
    """Landmarks of ``size`` consecutive cells, Euclidean distances between their centres."""
    assignment = np.arange(len(points)) // size
    centres = np.array([points[assignment == m].mean(0) for m in range(assignment.max() + 1)])
    d = np.sqrt(((centres[:, None] - centres[None]) ** 2).sum(-1))
    return DomainGeometry(np.arange(len(points)), assignment, np.bincount(assignment) / len(points), {10: d / d.max()}, centres)


def _planted_geometries(rng: np.random.Generator) -> list[DomainGeometry]:
    """Two landmark sets (blocks of 4 and of 5 consecutive cells) over 60 cells on a
    scalene triangle's outline: Euclidean distances between landmark centres, one k."""
    corners = np.array([[0.0, 0.0], [3.0, 0.0], [0.7, 1.5], [0.0, 0.0]])
    t = np.sort(rng.random(60)) * 3
    leg = np.minimum(t.astype(int), 2)
    points = corners[leg] + (t - leg)[:, None] * (corners[leg + 1] - corners[leg])
    return [_block_geometry(points, size) for size in (4, 5)]


def test_distortion_ranks_the_planted_correspondence_over_a_reflection():
    """Both domains share one geometry (the same cells, as two restarts of landmarks).
    Two candidates match landmarks to themselves (the truth), four to the reflection (the
    curve matched end to end). Under a common yardstick (every restart's landmarks) the
    true candidates distort least, whichever restart they were computed on; a plain
    consensus follows the majority."""
    rng = np.random.default_rng(4)
    geoms = _planted_geometries(rng)
    cands = []
    for i in range(6):
        restart = i % 2
        w = geoms[restart].weights
        coupling = np.diag(w) if i < 2 else np.diag(w)[:, ::-1]  # reflected: landmark l -> L-1-l
        cands.append({"restart": restart, "coupling": coupling / coupling.sum()})
    distortion = distortion_scores(cands, geoms, geoms)
    assert distortion[:2].max() < distortion[2:].min()
    projections = []
    for c in cands:
        g = geoms[c["restart"]]
        rows = c["coupling"] / c["coupling"].sum(1, keepdims=True)
        projections.append((rows @ g.centres)[g.assignment])
    assert select_candidate(projections)[0] >= 2
    # weighted towards the least distorting third, the true pair wins
    witnesses = (distortion <= np.sort(distortion)[1]).astype(float)
    assert np.argmin(consensus_scores(projections, witnesses=witnesses)) < 2


def test_pooled_distortion_tells_what_one_view_cannot():
    """The same 60 cells in two views. In the first they lie evenly on a line, so matching the
    line end to end distorts exactly as little as the truth; in the second they lie on a
    scalene triangle's outline, where it does not. Judged on both views' landmarks, the true
    correspondence distorts least."""
    rng = np.random.default_rng(7)
    t = np.linspace(0, 3, 60)
    shift = rng.normal(0, 0.02, 60)
    shift = (shift - shift[::-1]) / 2  # B's line: A's, measured with noise that is mirror symmetric
    leg = np.minimum(t.astype(int), 2)
    corners = np.array([[0.0, 0.0], [3.0, 0.0], [0.7, 1.5], [0.0, 0.0]])
    outline = corners[leg] + (t - leg)[:, None] * (corners[leg + 1] - corners[leg])
    line = [{"a": _block_geometry(t[:, None], size), "b": _block_geometry((t + shift)[:, None], size)} for size in (4, 5)]
    triangle = [{"a": _block_geometry(outline, size), "b": _block_geometry(outline + rng.normal(0, 0.02, (60, 2)), size)}
                for size in (4, 5)]
    cands = []
    for partner in (np.arange(60), np.arange(60)[::-1]):  # the truth, the line reversed
        g = line[0]
        plan = np.zeros((len(g["a"].weights), len(g["b"].weights)))
        np.add.at(plan, (g["a"].assignment, g["b"].assignment[partner]), 1.0)
        cands.append({"restart": 0, "coupling": plan / plan.sum()})
    own = distortion_scores(cands, [g["a"] for g in line], [g["b"] for g in line])
    assert own[0] == pytest.approx(own[1], abs=1e-9) and own[0] > -12  # the line alone cannot tell
    np.testing.assert_allclose(pooled_distortion({"b": cands}, line, [])["b"], own)
    pooled = pooled_distortion({"b": cands}, line, triangle)["b"]
    assert pooled[0] < pooled[1] - 0.1


def test_distance_profiles_are_invariant_and_start_gw_at_the_isometry():
    """A landmark's distance quantiles do not change when the landmarks are relabelled;
    for an exact (relabelled) copy of a geometry with distinct profiles, the start is the
    relabelling itself."""
    rng = np.random.default_rng(3)
    points = rng.normal(size=(30, 4)) * np.array([3.0, 2.0, 1.0, 0.5])
    d = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1))
    d /= d.max()
    w = rng.random(30) + 0.5
    w /= w.sum()
    perm = rng.permutation(30)
    qa, qb = distance_quantiles(d, w), distance_quantiles(d[np.ix_(perm, perm)], w[perm])
    assert qa.shape == (30, 64) and np.all(np.diff(qa, axis=1) >= -1e-12)  # quantiles rise
    np.testing.assert_allclose(qb, qa[perm], atol=1e-12)
    start = distance_profile_start(d, d[np.ix_(perm, perm)], w, w[perm])
    np.testing.assert_allclose(start.sum(1), w, atol=1e-9)
    np.testing.assert_allclose(start.sum(0), w[perm], atol=1e-9)
    assert np.isclose(start[perm, np.arange(30)].sum(), 1.0)  # all mass on the true pairs


def test_distance_profile_start_escapes_the_swapped_optimum_and_is_kept():
    """GW from the product coupling lands with cell types swapped on this planted case (four
    types of unequal size, benchmarks/gw_starts.py seed 0); from the distance-profile start
    it finds the types, distorts less, and the prior keeps it."""
    bench = load_benchmark("gw_starts")
    x, y, t = bench.four_types(200, seed=0)
    ga, gb = (domain_geometry(representation(v, modality="features"), np.arange(200), k_grid=[10], n_landmarks=50, seed=0)
              for v in (x, y))
    cands = [dict(c, restart=0) for c in gw_candidates(ga, gb, starts=GW_STARTS)]
    assert [c["start"] for c in cands] == ["product", "distance profile"]
    product, profile = (bench.type_agreement(c["coupling"], ga, gb, t) for c in cands)
    assert product < 0.8 < 0.95 < profile  # chance: about 0.27
    distortion = distortion_scores(cands, [ga], [gb])
    assert distortion[1] < distortion[0]
    (prior,) = correspondence_priors(
        {"a": x, "b": y}, {"a": np.arange(200), "b": np.arange(200)}, k_grid=[10], n_landmarks=50, n_restarts=1,
        starts=GW_STARTS,
    )
    assert bench.type_agreement(prior.coupling, prior.geometry_a, prior.geometry_b, t) > 0.95
    with pytest.raises(ValueError, match="unknown GW start"):
        gw_candidates(ga, gb, starts=["random"])


def _one_restart_geometry(points: np.ndarray) -> DomainGeometry:
    """One landmark per point, uniform weights, Euclidean distances scaled to [0, 1]."""
    n = len(points)
    d = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1))
    return DomainGeometry(np.arange(n), np.arange(n), np.full(n, 1.0 / n), {10: d / d.max()}, points)


def test_joint_selection_keeps_the_correspondences_consistent_where_the_hub_cannot_tell():
    """The hub A is a straight, evenly weighted line: matching it to B (or C) forwards or
    end to end distorts exactly as much, so the pair alone cannot choose. B and C share a
    scalene, asymmetric curve; the coupling they imply through A is the identity only if
    both pairs are oriented alike. The joint rule keeps a consistent pair of candidates;
    the candidates of each pair tie."""
    n = 15
    t = np.linspace(0, 1, n)
    line = np.c_[t, np.zeros(n)]
    curve = np.c_[np.cos(2.5 * t**1.5), np.sin(2.5 * t**1.5) * (1 + t)]
    geoms = [{"a": _one_restart_geometry(line), "b": _one_restart_geometry(curve), "c": _one_restart_geometry(curve)}]
    forward, reverse = np.eye(n) / n, np.eye(n)[::-1] / n
    cands = {"b": [{"restart": 0, "coupling": forward}, {"restart": 0, "coupling": reverse}],
             "c": [{"restart": 0, "coupling": reverse}, {"restart": 0, "coupling": forward}]}
    distortion = {d: distortion_scores(cands[d], [geoms[0]["a"]], [geoms[0][d]]) for d in "bc"}
    assert distortion["b"][0] == pytest.approx(distortion["b"][1]) and distortion["c"][0] == pytest.approx(distortion["c"][1])
    chosen, _ = joint_selection(cands, distortion, geoms)
    implied = composed_coupling(cands["b"][chosen["b"]]["coupling"], cands["c"][chosen["c"]]["coupling"])
    assert np.allclose(implied, np.eye(n) / n)
    # one pair only: the least distorting candidate, nothing implied
    skewed = {"b": np.array([0.3, 0.1])}
    assert joint_selection({"b": cands["b"]}, skewed, geoms)[0] == {"b": 1}


def test_selection_keeps_the_consensus_over_a_reflected_run():
    """Two runs that agree (up to noise) and one that matched the trajectory end to end:
    the criterion needs no truth and keeps one of the agreeing runs."""
    n = 40
    centres_b = np.linspace(0, 1, n)[:, None] * np.array([[1.0, 0.5]])
    identity = np.eye(n) / n
    rng = np.random.default_rng(4)
    noisy = np.abs(identity + rng.normal(scale=1e-4, size=(n, n)))
    reflected = np.eye(n)[::-1] / n
    projections = [(c / c.sum(1, keepdims=True)) @ centres_b for c in (reflected, identity, noisy / noisy.sum())]
    best, score = select_candidate(projections)
    assert best in (1, 2)
    assert score[0] > 1.5 * max(score[1], score[2])
    assert select_candidate(projections[:1])[0] == 0


def test_consensus_scores_are_scale_free_and_single_out_the_outlier():
    """Projections of the same cells by four candidates, one of them mirrored: the mirrored
    one scores highest, the score does not depend on the units of B's representation, and
    identical candidates disagree by zero."""
    rng = np.random.default_rng(8)
    truth = rng.normal(size=(200, 3))
    runs = [truth + rng.normal(scale=0.05, size=truth.shape) for _ in range(3)] + [-truth]
    score = consensus_scores(runs)
    assert np.argmax(score) == 3 and score[3] > 2 * score[:3].max()
    assert np.allclose(consensus_scores([1e3 * r for r in runs]), score)
    assert np.allclose(consensus_scores([truth, truth]), 0.0)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_correspondence_loss_properties(scale):
    """The pull on prior pairs (anchor_loss on partner rows): zero at coincidence,
    scale-invariant, symmetric, finite gradients with no radial part."""
    torch.manual_seed(0)
    z = torch.randn(64, 8, dtype=torch.float64)
    assert float(anchor_loss(z, z.clone())) == pytest.approx(0.0, abs=1e-12)
    za = (z * scale).requires_grad_(True)
    zb = z * scale + torch.randn(64, 8, dtype=torch.float64) * scale * 0.3
    loss = anchor_loss(za, zb)
    assert float(loss.detach()) == pytest.approx(float(anchor_loss(z, zb / scale)), rel=1e-9)
    assert float(loss.detach()) == pytest.approx(float(anchor_loss(zb, za.detach())), rel=1e-9)
    (grad,) = torch.autograd.grad(loss, za)
    assert torch.isfinite(grad).all()


def test_latent_pull_is_exact_scale_free_and_zero_when_partners_coincide():
    """The trained latent's pull against a prior: the coupling's mean squared partner distance
    over the independent pairs', computed from landmark moments; exact against the cell-level
    sums, unchanged by a common scale and shift, 0 when partners coincide, near 1 when the
    latent ignores the prior."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(120, 3))
    ga, gb = _block_geometry(x, 4), _block_geometry(x, 4)  # 30 landmarks of 4 consecutive cells
    plan = np.eye(30) / 30 * 0.8 + 0.2 / 900  # mostly landmark l with l, some mass everywhere
    prior = CorrespondencePrior("a", "b", ga, gb, plan)
    za, zb = rng.normal(size=(120, 5)), rng.normal(size=(120, 5))
    cells = prior.cell_coupling()
    d2 = ((za[:, None] - zb[None]) ** 2).sum(-1)
    brute = (cells * d2).sum() / (cells.sum(1) @ d2 @ cells.sum(0))
    assert prior.latent_pull(za, zb) == pytest.approx(brute, rel=1e-10)
    assert prior.latent_pull(3 * za - 2, 3 * zb - 2) == pytest.approx(brute, rel=1e-10)
    assert prior.latent_pull(za, zb) == pytest.approx(1.0, abs=0.1)  # unrelated latents
    # partners in one landmark share a latent point: only the 20% spread mass is apart
    centres = rng.normal(size=(30, 5))
    together = prior.latent_pull(centres[ga.assignment], centres[gb.assignment])
    assert 0.15 < together < 0.25
    diagonal = CorrespondencePrior("a", "b", ga, gb, np.eye(30) / 30)
    assert diagonal.latent_pull(centres[ga.assignment], centres[gb.assignment]) == pytest.approx(0.0, abs=1e-12)


def test_geometry_at_50k_cells_stays_linear_in_memory():
    """Beyond ``max_cells`` only an O(n) landmark index is kept per cell: 50,000 cells
    with a 4,000-cell graph sample stay well under what an n x n matrix would need (20 GB)."""
    rng = np.random.default_rng(5)
    x, _ = _branches(50_000, rng, dim=20)
    tracemalloc.start()
    geom = domain_geometry(x, np.arange(50_000), n_landmarks=100, k_grid=(15,), max_cells=4_000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert geom.assignment.shape == (50_000,) and len(geom.weights) == len(geom.centres) <= 100
    assert geom.weights.sum() == pytest.approx(1.0)
    assert peak < 400 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_refinement_beyond_the_graph_sample_stays_linear_in_memory():
    """At 50,000 cells the refinement runs on k-means landmarks of the graph sample; every
    cell keeps one landmark index, nothing grows with n squared."""
    from cellbridge.geometry import CorrespondencePrior

    rng = np.random.default_rng(6)
    x, _ = _branches(50_000, rng, dim=20)
    cells = np.arange(50_000)
    coarse = {d: domain_geometry(x, cells, n_landmarks=100, k_grid=(15,), max_cells=4_000, seed=s) for d, s in (("a", 0), ("b", 1))}
    prior = CorrespondencePrior("a", "b", coarse["a"], coarse["b"], np.outer(coarse["a"].weights, coarse["b"].weights))
    tracemalloc.start()
    fine = refined_prior(prior, {"a": x, "b": x}, 15, n_landmarks=300, max_cells=4_000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert fine.coupling.shape == (len(fine.geometry_a.weights), len(fine.geometry_b.weights))
    assert 250 <= len(fine.geometry_a.weights) <= 300 and fine.geometry_a.assignment.shape == (50_000,)
    assert fine.coupling.sum() == pytest.approx(1.0)
    assert peak < 400 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def _features(x: np.ndarray, name: str) -> ad.AnnData:
    a = ad.AnnData(x.astype(np.float32))
    a.obs_names = [f"{name}{i}" for i in range(len(x))]
    a.var_names = [f"{name}_f{i}" for i in range(x.shape[1])]
    a.obs["domain"] = name
    a.uns["cellbridge"] = {"modality": "features", "domain": name}
    return a


def test_model_trains_with_the_prior_and_records_the_selection(tmp_path):
    from cellbridge import CrossModalModel

    rng = np.random.default_rng(6)
    xa, ba = _branches(400, rng, dim=6)
    xb, bb = _branches(400, rng, dim=10)
    adatas = {"a": _features(xa, "a"), "b": _features(xb, "b")}
    model = CrossModalModel(
        adatas, latent_dim=4, alignment="mmd", seed=0,
        correspondence_kwargs={"n_landmarks": 60, "k_grid": [10, 20, 30]},
    )
    assert model.config["correspondence"]["method"] == "gw"
    history = model.train(max_epochs=12, progress=False, warmup_epochs=2, ramp_epochs=2)
    assert "prior_loss" in history
    assert history["prior_loss"].iloc[-3:].mean() < history["prior_loss"].iloc[:2].mean()
    table = pd.DataFrame(model.config["correspondence"]["candidates"])
    assert set(table.columns) >= {"domain_a", "domain_b", "view", "restart", "k", "start", "gw", "distortion",
                                  "view_distortion", "pooled_distortion", "disagreement", "chosen"}
    # two domains: the view whose own choice distorts least, and in it the candidate that
    # distorts least on both views' landmarks
    kept = table.loc[table["chosen"]].iloc[0]
    in_view = table.loc[table["view"] == kept["view"]]
    assert kept["view_distortion"] == table["view_distortion"].min() == in_view["distortion"].min()
    assert kept["pooled_distortion"] == in_view["pooled_distortion"].min()
    assert not np.allclose(table["pooled_distortion"], table["distortion"])  # the other view counts
    # the default scalings x restarts x the k grid x the default GW starts (both)
    assert len(table) == 2 * 3 * 3 * 2 and set(table["view"]) == {"standardised", "as given"}
    assert set(table["start"]) == set(DEFAULT_STARTS) == set(GW_STARTS)
    assert model.config["correspondence"]["seconds"] > 0
    assert table["chosen"].sum() == 1
    # how closely the trained latent keeps the prior's pairs, recorded with the model
    (pull,) = model.config["correspondence"]["latent_pull"].values()
    assert 0 < pull < 0.8
    # training follows the prior: a cell's nearest cross-domain latent neighbour is in the group
    # its prior partners come from about as often as the partners themselves are
    (prior,) = model.priors
    draws = rng.integers(400, size=4000)
    partners = prior.restrict(np.arange(400), np.arange(400)).partners(draws, rng)
    prior_agree = (ba[draws] == bb[partners]).mean()
    za, zb = model.get_latent("a"), model.get_latent("b")
    nearest = np.argmin(((za[:, None] - zb[None]) ** 2).sum(-1), axis=1)
    latent_agree = (ba == bb[nearest]).mean()
    assert latent_agree > prior_agree - 0.15
    assert latent_agree > 0.45  # chance: 0.38
    model.save(tmp_path / "m")
    loaded = CrossModalModel.load(tmp_path / "m").config["correspondence"]
    assert loaded["candidates"] == model.config["correspondence"]["candidates"]
    assert loaded["latent_pull"] == model.config["correspondence"]["latent_pull"]


def test_auto_prior_is_off_for_none_and_under_labels():
    from cellbridge import CrossModalModel

    rng = np.random.default_rng(7)
    adatas = {"a": _features(rng.normal(size=(50, 4)), "a"), "b": _features(rng.normal(size=(50, 4)), "b")}
    assert CrossModalModel(adatas, alignment="none").config["correspondence"]["method"] == "none"
    for a in adatas.values():
        a.obs["t"] = pd.Categorical(rng.choice(["x", "y"], 50))
    assert CrossModalModel(adatas, alignment="mmd", label_key="t").config["correspondence"]["method"] == "none"
    assert CrossModalModel(adatas, alignment="mmd", label_key="t", correspondence="gw").config["correspondence"]["method"] == "gw"
    with pytest.raises(ValueError, match="correspondence"):
        CrossModalModel(adatas, correspondence="sometimes")
    # the GW starts and the scalings reach the prior: one candidate per scaling x restart x k x start
    model = CrossModalModel(adatas, correspondence_kwargs={"starts": list(GW_STARTS), "k_grid": [10], "n_restarts": 1})
    (prior,) = model.correspondence_priors()
    assert sorted(c["start"] for c in prior.candidates) == sorted(GW_STARTS * 2)
    model = CrossModalModel(adatas, correspondence_kwargs={"starts": ["product"], "k_grid": [10], "n_restarts": 1})
    (prior,) = model.correspondence_priors()
    assert [c["start"] for c in prior.candidates] == ["product"] * 2
    model = CrossModalModel(adatas, correspondence_kwargs={"scalings": ["as given"], "k_grid": [10], "n_restarts": 1})
    (prior,) = model.correspondence_priors()
    assert [c["view"] for c in prior.candidates] == ["as given"] * len(DEFAULT_STARTS)
    model = CrossModalModel(adatas, correspondence_kwargs={"multiscale": True, "k_grid": [5, 10], "n_restarts": 1})
    (prior,) = model.correspondence_priors()
    assert sorted({c["k"] for c in prior.candidates}) == [MULTISCALE_K, 5, 10]


def _metric(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.normal(size=(n, dim))
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    return d / d.max()


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("symmetric", [True, False])
def test_entropic_gw_plan_is_pots_plan_to_the_last_bit(symmetric, fused):
    """The prior's GW solver replaces POT's (fewer checks per Sinkhorn iteration) and must
    give the very same plans, plain and fused with a label cost: every kept candidate and
    benchmark figure rests on them."""
    import ot

    rng = np.random.default_rng(3)
    ca, cb = _metric(rng, 45, 3), _metric(rng, 60, 4)
    if not symmetric:
        ca = ca + 0.05 * rng.random(ca.shape)
    p = rng.random(45) + 0.5
    p /= p.sum()
    q = np.full(60, 1 / 60)
    start = np.outer(p, q) * (1 + 0.5 * rng.random((45, 60)))
    start /= start.sum()
    cost = rng.random((45, 60))
    for eps, g0 in ((5e-3, None), (1e-3, start), (1e-6, None)):  # 1e-6: Sinkhorn stops on numerical failure
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # POT warns on unconverged Sinkhorn; only the plans matter here
            if fused:
                want = ot.gromov.entropic_fused_gromov_wasserstein(cost, ca, cb, p, q, "square_loss", epsilon=eps,
                                                                   alpha=0.3, G0=g0, max_iter=60, tol=1e-7)
            else:
                want = ot.gromov.entropic_gromov_wasserstein(ca, cb, p, q, "square_loss", epsilon=eps, G0=g0,
                                                             max_iter=60, tol=1e-7)
            got = entropic_gw_plan(ca, cb, p, q, eps, start=g0, max_iter=60, tol=1e-7,
                                   feature_cost=cost if fused else None, alpha=0.3)
        assert np.array_equal(want, got, equal_nan=True), eps


def test_sinkhorn_plan_has_the_asked_marginals_and_prefers_cheap_pairs():
    rng = np.random.default_rng(0)
    p, q = rng.random(30) + 0.1, rng.random(40) + 0.1
    p, q = p / p.sum(), q / q.sum()
    cost = rng.random((30, 40))
    plan = sinkhorn_plan(p, q, cost, 0.05)
    assert np.allclose(plan.sum(1), p, atol=1e-6) and np.allclose(plan.sum(0), q, atol=1e-9)
    independent = np.outer(p, q)
    assert (plan * cost).sum() < (independent * cost).sum()  # cheaper than not transporting by cost
    sharper = sinkhorn_plan(p, q, cost, 0.005)
    assert (sharper * cost).sum() < (plan * cost).sum()  # less entropy, closer to the OT optimum
