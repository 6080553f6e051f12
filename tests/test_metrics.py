"""Tests for cellbridge.metrics: hand-made cases with known answers and properties."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import roc_auc_score

from cellbridge import metrics
from cellbridge.metrics import (
    auroc,
    auroc_per_feature,
    domain_entropy,
    domain_entropy_per_cell,
    foscttm,
    foscttm_per_cell,
    knn_label_transfer,
    mean_predictor_error,
    partner_in_knn,
    pca_reconstruction_error,
    per_cell_correlation,
    per_feature_correlation,
    pixel_mse,
    rmse,
    silhouette_by_domain,
    silhouette_by_label,
    ssim_mean,
    ssim_per_crop,
    summarize,
    unshared_matched_fraction,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def separated_clusters(
    rng: np.random.Generator, n_per_cluster: int, n_clusters: int = 3, dim: int = 4, spread: float = 20.0
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs far apart along the first axes, with their cluster labels."""
    centres = spread * np.eye(n_clusters, dim)
    labels = np.repeat([f"type{i}" for i in range(n_clusters)], n_per_cluster)
    z = centres[np.repeat(np.arange(n_clusters), n_per_cluster)] + rng.normal(size=(n_clusters * n_per_cluster, dim))
    return z, labels


# ------------------------------------------------------------------------------ FOSCTTM


def test_perfect_alignment_scores_best(rng):
    z = rng.normal(size=(60, 5))
    assert foscttm(z, z) == 0.0
    assert partner_in_knn(z, z, k=1) == 1.0


def test_independent_latents_score_chance(rng):
    za = rng.normal(size=(500, 8))
    zb = rng.normal(size=(500, 8))
    assert foscttm(za, zb) == pytest.approx(0.5, abs=0.05)
    # By chance the partner is among the 5 nearest of 499 others about 1% of the time.
    assert partner_in_knn(za, zb, k=5) < 0.05


def test_foscttm_hand_computed_example():
    # 1-D latents; row i of each is the same cell.
    za = np.array([[0.0], [2.0], [5.0]])
    zb = np.array([[1.5], [0.0], [3.0]])
    # A->B: a0=0: b1 (d 0) beats partner b0 (d 1.5) -> 1/2; a1=2: b0 (d .5) and
    # b2 (d 1) beat partner b1 (d 2) -> 2/2; a2=5: partner b2 (d 2) is nearest -> 0.
    # B->A: b0=1.5: a1 (d .5) beats a0 (d 1.5); b1=0: a0 (d 0) beats a1 (d 2);
    # b2=3: a1 (d 1) beats a2 (d 2); each 1/2.
    a_to_b, b_to_a = foscttm_per_cell(za, zb)
    np.testing.assert_allclose(a_to_b, [0.5, 1.0, 0.0])
    np.testing.assert_allclose(b_to_a, [0.5, 0.5, 0.5])
    assert foscttm(za, zb) == pytest.approx(0.5)
    # k=1: only a2 finds its partner first (A->B), no cell of B does.
    assert partner_in_knn(za, zb, k=1) == pytest.approx((1 / 3 + 0) / 2)
    assert partner_in_knn(za, zb, k=2) == pytest.approx((2 / 3 + 1) / 2)


def test_collapsed_latent_is_uninformative_not_perfect():
    # Every distance ties: random tie-breaking gives rank fraction 1/2, and the
    # partner lands among the k nearest of n with probability k / n.
    z = np.zeros((4, 2))
    assert foscttm(z, z) == pytest.approx(0.5)
    assert partner_in_knn(z, z, k=1) == pytest.approx(1 / 4)
    assert partner_in_knn(z, z, k=3) == pytest.approx(3 / 4)


def test_blocked_distance_pass_matches_single_block(rng, monkeypatch):
    za = rng.normal(size=(37, 3))
    zb = za + rng.normal(scale=0.7, size=za.shape)
    whole = foscttm_per_cell(za, zb)
    knn_whole = partner_in_knn(za, zb, k=4)
    monkeypatch.setattr(metrics._checks, "_BLOCK_ELEMENTS", 50)  # 1 row of 37 per block
    blocked = foscttm_per_cell(za, zb)
    np.testing.assert_array_equal(whole[0], blocked[0])
    np.testing.assert_array_equal(whole[1], blocked[1])
    assert partner_in_knn(za, zb, k=4) == knn_whole


latent_pairs = st.integers(2, 9).flatmap(
    lambda n: st.integers(1, 3).flatmap(
        lambda d: st.tuples(
            # Small integers make exact ties and duplicated cells common.
            arrays(np.float64, (n, d), elements=st.integers(-6, 6).map(float)),
            arrays(np.float64, (n, d), elements=st.integers(-6, 6).map(float)),
        )
    )
)


@settings(max_examples=60, deadline=None)
@given(pair=latent_pairs)
def test_foscttm_is_a_fraction_and_symmetric(pair):
    za, zb = pair
    value = foscttm(za, zb)
    assert 0.0 <= value <= 1.0
    assert foscttm(zb, za) == pytest.approx(value, abs=1e-12)
    a_to_b, b_to_a = foscttm_per_cell(za, zb)
    swapped_b_to_a, swapped_a_to_b = foscttm_per_cell(zb, za)
    np.testing.assert_allclose(a_to_b, swapped_a_to_b)
    np.testing.assert_allclose(b_to_a, swapped_b_to_a)


@settings(max_examples=60, deadline=None)
@given(
    pair=latent_pairs,
    seed=st.integers(0, 2**16),
    shift=st.floats(-100, 100, allow_nan=False),
)
def test_foscttm_invariant_to_common_rotation_and_translation(pair, seed, shift):
    za, zb = pair
    d = za.shape[1]
    rotation, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    offset = shift * np.linspace(1.0, -0.5, d)
    moved_a, moved_b = za @ rotation + offset, zb @ rotation + offset
    assert foscttm(moved_a, moved_b) == pytest.approx(foscttm(za, zb), abs=1e-12)
    k = max(1, za.shape[0] // 2)
    assert partner_in_knn(moved_a, moved_b, k=k) == pytest.approx(partner_in_knn(za, zb, k=k), abs=1e-12)


def test_alignment_rejects_bad_input(rng):
    z = rng.normal(size=(10, 3))
    with pytest.raises(ValueError, match="za has shape"):
        foscttm(z, z[:9])
    with pytest.raises(ValueError, match="zb has shape"):
        foscttm(z, z[:, :2])
    bad = z.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="zb contains NaN"):
        foscttm(z, bad)
    with pytest.raises(ValueError, match="at least 2 rows"):
        foscttm(z[:1], z[:1])
    with pytest.raises(ValueError, match="2-D"):
        foscttm(z[:, 0], z[:, 0])
    with pytest.raises(ValueError, match="exceeds"):
        partner_in_knn(z, z, k=10)
    with pytest.raises(ValueError, match="positive integer"):
        partner_in_knn(z, z, k=0)


# ------------------------------------------------------------------------------- labels


def test_label_transfer_on_separated_clusters_is_perfect(rng):
    z_ref, labels_ref = separated_clusters(rng, 50)
    z_query, labels_query = separated_clusters(rng, 30)
    result = knn_label_transfer(z_ref, labels_ref, z_query, labels_query, k=5)
    assert result == {"accuracy": 1.0, "macro_f1": 1.0}


def test_label_transfer_with_shuffled_labels_is_at_chance(rng):
    z_ref, labels_ref = separated_clusters(rng, 200)
    z_query, labels_query = separated_clusters(rng, 200)
    result = knn_label_transfer(z_ref, rng.permutation(labels_ref), z_query, labels_query, k=15)
    assert result["accuracy"] == pytest.approx(1 / 3, abs=0.1)
    assert result["macro_f1"] == pytest.approx(1 / 3, abs=0.1)


def test_label_transfer_counts_labels_missing_from_reference_as_wrong(rng):
    z_ref, labels_ref = separated_clusters(rng, 20, n_clusters=2)
    z_query, labels_query = separated_clusters(rng, 20, n_clusters=3)
    result = knn_label_transfer(z_ref, labels_ref, z_query, labels_query, k=3)
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["macro_f1"] < 1.0


def test_label_transfer_rejects_bad_input(rng):
    z, labels = separated_clusters(rng, 5)
    with pytest.raises(ValueError, match="labels_query has 14 entries"):
        knn_label_transfer(z, labels, z, labels[:14])
    with pytest.raises(ValueError, match="same latent space"):
        knn_label_transfer(z, labels, z[:, :3], labels)
    missing = labels.astype(object)
    missing[0] = None
    with pytest.raises(ValueError, match="missing labels"):
        knn_label_transfer(z, missing, z, labels)
    with pytest.raises(ValueError, match="exceeds"):
        knn_label_transfer(z, labels, z, labels, k=16)


def _partly_shared(rng, n: int = 30):
    """A: types 0, 1 (shared) and 3 (A only); B: types 0, 1 and 4 (B only), blobs per type."""
    centres = {t: 20.0 * np.eye(5)[i] for i, t in enumerate(["t0", "t1", "t2", "t3", "t4"])}

    def blob(types, where):
        labels = np.repeat(types, n)
        return np.vstack([centres[w] for w in np.repeat(where, n)]) + rng.normal(size=(labels.size, 5)), labels

    return blob, centres


def test_unshared_matched_fraction_zero_when_unique_types_sit_apart(rng):
    blob, _ = _partly_shared(rng)
    za, la = blob(["t0", "t1", "t3"], ["t0", "t1", "t3"])
    zb, lb = blob(["t0", "t1", "t4"], ["t0", "t1", "t3"])  # A's t3 and B's t4 together, away from t0/t1
    res = unshared_matched_fraction(za, la, zb, lb, k=5)
    assert res == {"fraction": 0.0, "a_to_b": 0.0, "b_to_a": 0.0, "n_a": 30.0, "n_b": 30.0}


def test_unshared_matched_fraction_one_when_unique_types_land_on_shared_ones(rng):
    blob, _ = _partly_shared(rng)
    za, la = blob(["t0", "t1", "t3"], ["t0", "t1", "t0"])  # A's own type placed on type 0
    zb, lb = blob(["t0", "t1", "t4"], ["t0", "t1", "t3"])
    res = unshared_matched_fraction(za, la, zb, lb, k=5)
    assert res["a_to_b"] == 1.0
    # equal numbers of unique cells in A and B: the pooled fraction is the mean of both sides
    assert res["fraction"] == pytest.approx((1.0 + res["b_to_a"]) / 2)
    # the same with the shared types named explicitly, and mirrored when A and B swap
    assert unshared_matched_fraction(za, la, zb, lb, shared=["t0", "t1"]) == res
    swapped = unshared_matched_fraction(zb, lb, za, la)
    assert (swapped["a_to_b"], swapped["b_to_a"], swapped["fraction"]) == (res["b_to_a"], 1.0, res["fraction"])


def test_unshared_matched_fraction_random_latent_scores_the_shared_share(rng):
    la = np.repeat(["t0", "t1", "t3"], 200)
    lb = np.repeat(["t0", "t1", "t4"], [300, 100, 200])  # two thirds of B are shared types
    za, zb = rng.normal(size=(la.size, 3)), rng.normal(size=(lb.size, 3))
    res = unshared_matched_fraction(za, la, zb, lb, k=1)
    assert res["a_to_b"] == pytest.approx(2 / 3, abs=0.1)
    assert res["b_to_a"] == pytest.approx(2 / 3, abs=0.1)


def test_unshared_matched_fraction_one_sided_and_bad_input(rng):
    blob, _ = _partly_shared(rng)
    za, la = blob(["t0", "t1"], ["t0", "t1"])
    zb, lb = blob(["t0", "t1", "t4"], ["t0", "t1", "t4"])
    res = unshared_matched_fraction(za, la, zb, lb)
    # A has no unique type; B's unique cells can only find A cells of shared types
    assert np.isnan(res["a_to_b"]) and res["n_a"] == 0 and res["n_b"] == 30
    assert res["b_to_a"] == res["fraction"] == 1.0
    with pytest.raises(ValueError, match="no one-domain-only"):
        unshared_matched_fraction(za, la, za, la)
    with pytest.raises(ValueError, match="no cell type is shared"):
        unshared_matched_fraction(za, la, zb, np.repeat("other", lb.size))
    with pytest.raises(ValueError, match="same latent space"):
        unshared_matched_fraction(za, la, zb[:, :2], lb)
    with pytest.raises(ValueError, match="labels_b has"):
        unshared_matched_fraction(za, la, zb, lb[:-1])
    with pytest.raises(ValueError, match="exceeds"):
        unshared_matched_fraction(za, la, zb, lb, k=61)


def test_silhouette_by_label_separates_clusters_from_noise(rng):
    z, labels = separated_clusters(rng, 40)
    assert silhouette_by_label(z, labels) > 0.8
    assert abs(silhouette_by_label(z, rng.permutation(labels))) < 0.1


def test_silhouette_subsampling_is_seeded(rng):
    z, labels = separated_clusters(rng, 100, spread=2.0)
    first = silhouette_by_label(z, labels, max_cells=60, seed=1)
    assert first == silhouette_by_label(z, labels, max_cells=60, seed=1)
    assert first != silhouette_by_label(z, labels, max_cells=60, seed=2)


def test_silhouette_needs_two_labels(rng):
    z = rng.normal(size=(10, 2))
    with pytest.raises(ValueError, match="distinct labels"):
        silhouette_by_label(z, ["a"] * 10)


# ------------------------------------------------------------------------------- mixing


def test_domain_silhouette_near_zero_when_mixed_and_high_when_separated(rng):
    z = rng.normal(size=(400, 3))
    domains = np.repeat(["rna", "image"], 200)
    assert abs(silhouette_by_domain(z, domains)) < 0.05
    z[200:] += 50.0
    assert silhouette_by_domain(z, domains) > 0.9


def test_domain_entropy_near_one_for_same_distribution(rng):
    z = rng.normal(size=(800, 3))
    domains = np.repeat(["rna", "image"], 400)
    assert domain_entropy(z, domains, k=30) == pytest.approx(1.0, abs=0.05)


def test_domain_entropy_normalises_for_unbalanced_domains(rng):
    # 3:1 proportions from one distribution are as mixed as the proportions allow.
    z = rng.normal(size=(800, 3))
    domains = np.repeat(["rna", "atac"], [600, 200])
    assert domain_entropy(z, domains, k=30) == pytest.approx(1.0, abs=0.05)


def test_domain_entropy_zero_for_far_apart_domains(rng):
    z = rng.normal(size=(200, 3))
    z[100:] += 100.0
    domains = np.repeat(["rna", "image"], 100)
    per_cell = domain_entropy_per_cell(z, domains, k=10)
    assert per_cell.shape == (200,)
    assert np.all(per_cell == 0.0)


def test_domain_entropy_hand_computed_with_all_cells_as_neighbours():
    # k = n - 1: each neighbourhood is every other cell, exactly as expected at random.
    z = np.arange(6.0).reshape(-1, 1)
    domains = ["a", "a", "a", "b", "b", "b"]
    np.testing.assert_allclose(domain_entropy_per_cell(z, domains, k=5), 1.0)


def test_domain_entropy_rejects_degenerate_domains(rng):
    z = rng.normal(size=(10, 2))
    with pytest.raises(ValueError, match="at least two different domains"):
        domain_entropy(z, ["a"] * 10, k=3)
    with pytest.raises(ValueError, match="at least two cells"):
        domain_entropy(z, ["a"] * 9 + ["b"], k=3)
    with pytest.raises(ValueError, match="exceeds"):
        domain_entropy(z, ["a"] * 5 + ["b"] * 5, k=10)


# ------------------------------------------------------------------- translation vs truth


def test_copied_matrix_is_perfect_and_negated_is_anticorrelated(rng):
    true = rng.normal(size=(30, 6))
    np.testing.assert_allclose(per_feature_correlation(true.copy(), true), 1.0)
    np.testing.assert_allclose(per_cell_correlation(true.copy(), true), 1.0)
    assert rmse(true.copy(), true) == 0.0
    np.testing.assert_allclose(per_feature_correlation(-true, true), -1.0)
    np.testing.assert_allclose(per_cell_correlation(-true, true, method="spearman"), -1.0)


def test_correlation_matches_numpy_and_spearman_is_rank_based(rng):
    true = rng.normal(size=(25, 4))
    pred = true + rng.normal(size=true.shape)
    expected = [np.corrcoef(pred[:, j], true[:, j])[0, 1] for j in range(4)]
    np.testing.assert_allclose(per_feature_correlation(pred, true), expected)
    # A monotone transform leaves the ranks, hence Spearman, unchanged.
    np.testing.assert_allclose(per_feature_correlation(np.exp(true), true, method="spearman"), 1.0)
    assert np.all(per_feature_correlation(np.exp(true), true) < 1.0)


def test_constant_feature_gives_nan_and_summarize_ignores_it(rng):
    true = rng.normal(size=(20, 3))
    true[:, 1] = 0.1  # 0.1 is not exact in binary: the mean may differ from it by rounding
    r = per_feature_correlation(true.copy(), true)
    assert np.isnan(r[1])
    np.testing.assert_allclose(r[[0, 2]], 1.0)
    assert summarize(r) == {"mean": pytest.approx(1.0), "median": pytest.approx(1.0), "n_valid": 2}


def test_sparse_truth_gives_the_same_answers_as_dense(rng):
    true = rng.poisson(0.5, size=(40, 7)).astype(float)
    pred = true + rng.normal(scale=0.5, size=true.shape)
    sparse_true = sp.csr_matrix(true)
    np.testing.assert_allclose(per_feature_correlation(pred, sparse_true), per_feature_correlation(pred, true))
    np.testing.assert_allclose(
        per_cell_correlation(pred, sparse_true, method="spearman"), per_cell_correlation(pred, true, method="spearman")
    )
    assert rmse(pred, sparse_true) == pytest.approx(rmse(pred, true))


def test_blocked_correlation_matches_single_block(rng, monkeypatch):
    true = rng.normal(size=(11, 9))
    pred = true + rng.normal(size=true.shape)
    whole = (per_feature_correlation(pred, true), per_cell_correlation(pred, true), rmse(pred, true))
    monkeypatch.setattr(metrics._checks, "_BLOCK_ELEMENTS", 25)
    blocked = (per_feature_correlation(pred, true), per_cell_correlation(pred, true), rmse(pred, true))
    np.testing.assert_allclose(blocked[0], whole[0])
    np.testing.assert_allclose(blocked[1], whole[1])
    assert blocked[2] == pytest.approx(whole[2])


def test_rmse_hand_computed():
    assert rmse(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[1.0, 0.0], [3.0, 4.0]])) == pytest.approx(1.0)


def test_translation_metrics_reject_bad_input(rng):
    true = rng.normal(size=(5, 3))
    with pytest.raises(ValueError, match="pred has shape"):
        rmse(true[:, :2], true)
    bad = true.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="pred contains NaN or infinite"):
        per_feature_correlation(bad, true)
    with pytest.raises(ValueError, match="method"):
        per_feature_correlation(true, true, method="kendall")
    with pytest.raises(ValueError, match="at least 2 rows"):
        per_feature_correlation(true[:1], true[:1])


def test_auroc_perfect_constant_reversed_and_one_class():
    truth = np.array([[0, 1, 1, 0], [0, 0, 1, 0], [1, 1, 1, 0], [1, 0, 1, 0]])
    scores = truth + 0.1 * np.arange(4)[:, None]
    per_feature = auroc_per_feature(scores.astype(float), truth)
    np.testing.assert_allclose(per_feature[:2], 1.0)
    assert np.isnan(per_feature[2]) and np.isnan(per_feature[3])  # only 1s / only 0s
    np.testing.assert_allclose(auroc_per_feature(np.ones(truth.shape), truth)[:2], 0.5)
    np.testing.assert_allclose(auroc_per_feature(-scores, truth)[:2], 0.0)
    assert auroc(scores, truth) == 1.0
    assert auroc(np.zeros(truth.shape), truth) == 0.5


def test_auroc_matches_sklearn_with_ties(rng):
    truth = rng.random((50, 5)) < 0.3
    scores = np.round(truth * 0.3 + rng.random((50, 5)), 1)  # rounding creates ties
    expected = [roc_auc_score(truth[:, j], scores[:, j]) for j in range(5)]
    np.testing.assert_allclose(auroc_per_feature(scores, truth), expected)
    np.testing.assert_allclose(auroc_per_feature(scores, sp.csr_matrix(truth.astype(float))), expected)
    assert auroc(scores, truth) == pytest.approx(roc_auc_score(truth.ravel(), scores.ravel()))


def test_auroc_rejects_non_binary_truth_and_single_class(rng):
    scores = rng.random((6, 2))
    with pytest.raises(ValueError, match="binary"):
        auroc_per_feature(scores, np.full((6, 2), 2.0))
    with pytest.raises(ValueError, match="both 0s and 1s"):
        auroc(scores, np.zeros((6, 2)))


# ------------------------------------------------------------------------------- images


def test_ssim_identical_crops_score_one_and_noise_lowers_it(rng):
    crops = rng.random((4, 16, 16))
    assert ssim_mean(crops, crops.copy(), data_range=1.0) == pytest.approx(1.0)
    slightly = np.clip(crops + rng.normal(scale=0.05, size=crops.shape), 0, 1)
    very = np.clip(crops + rng.normal(scale=0.5, size=crops.shape), 0, 1)
    per_crop = ssim_per_crop(slightly, crops, data_range=1.0)
    assert per_crop.shape == (4,)
    assert np.all(per_crop < 1.0)
    assert ssim_mean(very, crops, data_range=1.0) < ssim_mean(slightly, crops, data_range=1.0)


def test_ssim_default_data_range_is_that_of_the_true_crops(rng):
    crops = rng.random((3, 12, 12)) * 0.5
    noisy = crops + rng.normal(scale=0.05, size=crops.shape)
    span = float(crops.max() - crops.min())
    assert ssim_mean(noisy, crops) == pytest.approx(ssim_mean(noisy, crops, data_range=span))


def test_ssim_accepts_channels_last(rng):
    crops = rng.random((2, 10, 10, 3))
    assert ssim_mean(crops, crops.copy(), data_range=1.0) == pytest.approx(1.0)


def test_pixel_mse_hand_computed(rng):
    crops = rng.random((3, 8, 8))
    assert pixel_mse(crops, crops.copy()) == 0.0
    assert pixel_mse(crops + 0.1, crops) == pytest.approx(0.01)


def test_image_metrics_reject_bad_input(rng):
    crops = rng.random((2, 8, 8))
    with pytest.raises(ValueError, match="pred_crops has shape"):
        pixel_mse(crops[:1], crops)
    with pytest.raises(ValueError, match=r"\(n, height, width\)"):
        pixel_mse(crops[0], crops[0])
    with pytest.raises(ValueError, match="7 x 7"):
        ssim_mean(crops[:, :5, :5], crops[:, :5, :5])
    with pytest.raises(ValueError, match="data_range"):
        ssim_mean(crops, np.zeros_like(crops))
    bad = crops.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="true_crops contains NaN"):
        ssim_mean(crops, bad)


# ------------------------------------------------------------------ compression baselines


def low_rank_data(rng: np.random.Generator, factors: np.ndarray, n: int) -> np.ndarray:
    """Cells spanning the row space of ``factors``, offset so that PCA must centre."""
    return rng.normal(size=(n, factors.shape[0])) @ factors + 3.0


def test_pca_error_falls_with_components_and_vanishes_at_the_rank(rng):
    # Rank-3 signal plus small noise: the error falls with each component up to 3.
    factors = rng.normal(size=(3, 12))
    train = low_rank_data(rng, factors, 200) + 0.05 * rng.normal(size=(200, 12))
    test = low_rank_data(rng, factors, 100) + 0.05 * rng.normal(size=(100, 12))
    errors = [pca_reconstruction_error(train, test, n_components=c) for c in range(1, 6)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:]))
    assert errors[0] < mean_predictor_error(train, test)

    exact_train, exact_test = low_rank_data(rng, factors, 80), low_rank_data(rng, factors, 40)
    scale = mean_predictor_error(exact_train, exact_test)
    assert pca_reconstruction_error(exact_train, exact_test, n_components=2) > 0.01 * scale
    assert pca_reconstruction_error(exact_train, exact_test, n_components=3) < 1e-20 * scale
    assert pca_reconstruction_error(exact_train, exact_test, n_components=12) < 1e-20 * scale


def test_mean_predictor_error_hand_computed():
    train = np.array([[0.0, 2.0], [2.0, 4.0]])  # column means 1 and 3
    test = np.array([[1.0, 5.0], [3.0, 3.0]])  # squared errors 0, 4, 4, 0
    assert mean_predictor_error(train, test) == pytest.approx(2.0)


def test_compression_baselines_accept_sparse_input(rng):
    train = rng.poisson(0.4, size=(60, 15)).astype(float)
    test = rng.poisson(0.4, size=(30, 15)).astype(float)
    dense = pca_reconstruction_error(train, test, n_components=4)
    assert pca_reconstruction_error(sp.csr_matrix(train), sp.csr_matrix(test), n_components=4) == pytest.approx(dense)
    assert mean_predictor_error(sp.csr_matrix(train), test) == pytest.approx(mean_predictor_error(train, test))


def test_pca_solvers_agree(rng):
    # 600 x 100 dense takes sklearn's randomized SVD, sparse takes ARPACK.
    factors = rng.normal(size=(5, 100))
    train = low_rank_data(rng, factors, 600) + rng.normal(size=(600, 100))
    test = low_rank_data(rng, factors, 50) + rng.normal(size=(50, 100))
    dense = pca_reconstruction_error(train, test, n_components=5)
    assert pca_reconstruction_error(sp.csr_matrix(train), test, n_components=5) == pytest.approx(dense, rel=1e-6)


def test_sparse_pca_with_all_components_reconstructs_exactly(rng, monkeypatch):
    train = sp.csr_matrix(rng.poisson(0.4, size=(8, 15)).astype(float))
    test = rng.normal(size=(5, 15))
    # With 8 training cells the centred data has rank 7: 8 components span it and more.
    assert pca_reconstruction_error(train, train, n_components=8) < 1e-20
    monkeypatch.setattr(metrics.baselines, "_MAX_FEATURES_COVARIANCE_PCA", 10)
    with pytest.raises(ValueError, match="ARPACK"):
        pca_reconstruction_error(train, test, n_components=8)


def test_compression_baselines_reject_bad_input(rng):
    train = rng.normal(size=(10, 4))
    with pytest.raises(ValueError, match="same features"):
        mean_predictor_error(train, train[:, :3])
    with pytest.raises(ValueError, match=r"n_components must be an integer in \[1, 4\]"):
        pca_reconstruction_error(train, train, n_components=5)
    with pytest.raises(ValueError, match="n_components"):
        pca_reconstruction_error(train, train, n_components=0)


# ------------------------------------------------------------------------------ summary


def test_summarize_hand_computed_and_all_nan():
    assert summarize([1.0, np.nan, 3.0, 8.0]) == {"mean": 4.0, "median": 3.0, "n_valid": 3}
    empty = summarize(np.full(3, np.nan))
    assert empty["n_valid"] == 0 and np.isnan(empty["mean"]) and np.isnan(empty["median"])
