"""Segmentation, label matching and morphology features of single nuclei."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from cellbridge.preprocess.morphology import crop_features, crop_mask, feature_names, field_features, nucleus_features
from cellbridge.preprocess.segment import (
    estimate_nucleus_radius,
    field_background,
    fill_holes,
    match_labels,
    segment_nuclei,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nuclei"


def ellipse(shape, cy, cx, a, b, theta=0.0):
    """Boolean ellipse with semi-axes ``a`` (along ``theta``) and ``b``."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    dy, dx = yy - cy, xx - cx
    u = (dy * np.cos(theta) + dx * np.sin(theta)) / a
    v = (-dy * np.sin(theta) + dx * np.cos(theta)) / b
    return u * u + v * v <= 1


def render(labels, rng, *, background=100.0, brightness=(400, 900), noise=True):
    """Fluorescence-like field from a label image: per-nucleus brightness, blur, Poisson noise."""
    img = np.zeros(labels.shape)
    for lab in range(1, labels.max() + 1):
        img[labels == lab] = rng.uniform(*brightness)
    img = ndi.gaussian_filter(img, 1.0) + background
    return rng.poisson(img).astype(np.uint16) if noise else img


def sparse_field(rng, size=160, n=8, r=(6, 10)):
    """Well separated ellipses of random size and orientation, plus the true labels."""
    labels = np.zeros((size, size), dtype=np.int32)
    lab = 0
    for _ in range(500):
        if lab == n:
            break
        a = rng.uniform(*r)
        m = ellipse(labels.shape, *rng.uniform(r[1] + 3, size - r[1] - 3, 2), a, a * rng.uniform(0.7, 1), rng.uniform(0, np.pi))
        if (ndi.maximum_filter(labels > 0, size=7) & m).any():
            continue
        lab += 1
        labels[m] = lab
    return labels


# --------------------------------------------------------------------------- matching


def test_match_labels_counts_and_iou():
    truth = np.zeros((40, 40), dtype=int)
    truth[2:12, 2:12] = 5  # ids need not be consecutive
    truth[20:30, 20:30] = 9
    pred = np.zeros_like(truth)
    pred[2:12, 3:12] = 1  # IoU 0.9
    pred[20:25, 20:30] = 2  # IoU 0.5 -> matched at iou=0.5
    pred[33:38, 33:38] = 3  # spurious
    res = match_labels(pred, truth)
    assert (res["tp"], res["fp"], res["fn"]) == (2, 1, 0)
    assert res["precision"] == pytest.approx(2 / 3)
    assert res["recall"] == 1.0
    assert res["f1"] == pytest.approx(0.8)
    assert res["mean_iou"] == pytest.approx((0.9 + 0.5) / 2)
    strict = match_labels(pred, truth, iou=0.6)
    assert (strict["tp"], strict["fp"], strict["fn"]) == (1, 2, 1)


def test_match_labels_is_one_to_one():
    truth = np.zeros((20, 24), dtype=int)
    truth[2:10, 2:14] = 1
    # One true nucleus split in three: no piece reaches IoU 0.5.
    split = np.zeros_like(truth)
    split[2:10, 2:6], split[2:10, 6:10], split[2:10, 10:14] = 1, 2, 3
    res = match_labels(split, truth)
    assert (res["tp"], res["fp"], res["fn"]) == (0, 3, 1)
    assert np.isnan(res["mean_iou"])
    # Two true nuclei merged into one prediction: at most one of them is matched.
    two = np.zeros_like(truth)
    two[2:10, 2:8], two[2:10, 8:14] = 1, 2
    merged = (two > 0).astype(int)
    res = match_labels(merged, two, iou=0.4)
    assert (res["tp"], res["fp"], res["fn"]) == (1, 0, 1)
    with pytest.raises(ValueError, match="shape"):
        match_labels(split, truth[:5])
    assert match_labels(np.zeros((3, 3), int), np.zeros((3, 3), int))["f1"] == 1.0


# --------------------------------------------------------------------------- segmentation


def test_fill_holes_matches_scipy():
    rng = np.random.default_rng(3)
    mask = ndi.gaussian_filter(rng.random((120, 90)), 2) > 0.5
    np.testing.assert_array_equal(fill_holes(mask), ndi.binary_fill_holes(mask))


def test_touching_discs_are_split():
    labels = np.zeros((80, 80), dtype=np.int32)
    labels[ellipse(labels.shape, 40, 30, 10, 10)] = 1
    labels[ellipse(labels.shape, 40, 47, 10, 10) & (labels == 0)] = 2  # overlapping discs: one blob
    img = render(labels, np.random.default_rng(0), brightness=(700, 700))
    assert ndi.label(segment_nuclei(img, method="threshold", background_sigma=None) > 0)[1] == 1
    pred = segment_nuclei(img)
    assert pred.max() == 2
    res = match_labels(pred, labels)
    assert res["tp"] == 2 and res["mean_iou"] > 0.8


def test_simulated_fields_reach_f1_target():
    rng = np.random.default_rng(7)
    tp = fp = fn = 0
    for _ in range(4):
        truth = sparse_field(rng)
        res = match_labels(segment_nuclei(render(truth, rng)), truth)
        tp, fp, fn = tp + res["tp"], fp + res["fp"], fn + res["fn"]
    assert 2 * tp / (2 * tp + fp + fn) >= 0.95


def test_radius_estimate_tracks_nucleus_size():
    rng = np.random.default_rng(1)
    estimates = []
    for r in (5, 12):
        labels = np.zeros((200, 200), dtype=np.int32)
        for k, (cy, cx) in enumerate([(40, 40), (40, 140), (140, 60), (150, 150)], start=1):
            labels[ellipse(labels.shape, cy, cx, r, r)] = k
        estimates.append(estimate_nucleus_radius(render(labels, rng)))
        # The blurred rim makes the thresholded disc slightly larger than the truth.
        assert estimates[-1] == pytest.approx(r, abs=2.0)
    assert estimates[1] / estimates[0] == pytest.approx(12 / 5, rel=0.25)


def test_blank_field_has_no_nucleus():
    assert segment_nuclei(np.full((64, 64), 7.0)).max() == 0
    noise = np.random.default_rng(0).poisson(100, (128, 128)).astype(float)
    assert segment_nuclei(noise).max() == 0
    assert segment_nuclei(noise, min_snr=0).max() > 0  # thresholding alone finds noise blobs
    assert np.isnan(estimate_nucleus_radius(np.zeros((32, 32))))
    with pytest.raises(ValueError, match="2D"):
        segment_nuclei(np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="threshold"):
        segment_nuclei(np.random.default_rng(0).random((16, 16)), threshold="median")


def test_field_background_ignores_nuclei():
    labels = np.zeros((60, 60), dtype=int)
    labels[10:40, 10:40] = 1
    img = np.where(labels > 0, 900.0, 50.0)
    assert field_background(img, labels) == 50.0


@pytest.mark.realdata
def test_real_image_f1_at_least_080():
    img_path, mask_path = DATA / "stardist_img2d.tif", DATA / "stardist_mask2d.tif"
    if not img_path.exists():
        pytest.skip(f"real nucleus image not available at {img_path}")
    import tifffile

    res = match_labels(segment_nuclei(tifffile.imread(img_path)), tifffile.imread(mask_path))
    assert res["f1"] >= 0.80, res


# --------------------------------------------------------------------------- features


def test_disc_area_and_ellipse_eccentricity():
    disc = ellipse((64, 64), 31.5, 31.5, 12, 12)
    f = nucleus_features(disc, disc.astype(float))
    assert f["area"] == pytest.approx(np.pi * 12**2, rel=0.03)
    assert f["eccentricity"] < 0.1
    assert f["solidity"] > 0.9
    assert f["circularity"] > 0.85
    ell = ellipse((64, 64), 31.5, 31.5, 20, 10, theta=0.6)
    g = nucleus_features(ell, ell.astype(float))
    assert g["eccentricity"] == pytest.approx(np.sqrt(1 - 0.5**2), abs=0.02)
    assert g["major_axis"] == pytest.approx(40, rel=0.05)
    assert g["minor_axis"] == pytest.approx(20, rel=0.05)
    assert list(f) == feature_names()


def test_radial_profile_separates_rim_and_centre_bright_nuclei():
    yy, xx = np.mgrid[:32, :32]
    r = np.hypot(yy - 15.5, xx - 15.5) / 11
    inside = r <= 1
    rim = np.where(inside, 0.3 + 0.7 * r**2, 0.0)
    centre = np.where(inside, 1.0 - 0.7 * r**2, 0.0)
    df = crop_features(np.stack([rim, centre]))
    radial = df[[f"radial_{i}" for i in range(1, 6)]].to_numpy()
    assert np.all(np.diff(radial[0]) < 0)  # periphery (shell 1) brightest
    assert np.all(np.diff(radial[1]) > 0)
    assert df["center_periphery_ratio"].iloc[0] < 0.7 < 1.4 < df["center_periphery_ratio"].iloc[1]


def test_texture_distinguishes_granular_from_smooth_chromatin():
    rng = np.random.default_rng(0)
    disc = ellipse((32, 32), 15.5, 15.5, 11, 11)
    smooth = np.where(disc, 0.6, 0.0) + disc * ndi.gaussian_filter(rng.random((32, 32)), 4) * 0.1
    grainy = np.where(disc, 0.3 + 0.6 * (rng.random((32, 32)) > 0.5), 0.0)
    df = crop_features(np.stack([smooth, grainy]))
    assert df["glcm_contrast"][1] > df["glcm_contrast"][0]
    assert df["granularity"][1] > 5 * df["granularity"][0]
    assert df["glcm_homogeneity"][1] < df["glcm_homogeneity"][0]


def test_crop_and_field_features_agree_and_use_same_columns():
    rng = np.random.default_rng(2)
    labels = sparse_field(rng, size=120, n=4)
    img = render(labels, rng, background=0.0, noise=False)
    native = field_features(labels, img)
    assert list(native.columns) == feature_names()
    assert list(native.index) == [1, 2, 3, 4]
    # A crop at native scale (no resize) gives the same shape features.
    sl = ndi.find_objects(labels)[0]
    box = (slice(sl[0].start - 2, sl[0].stop + 2), slice(sl[1].start - 2, sl[1].stop + 2))
    crop = np.where(labels[box] == 1, img[box], 0.0) / img.max()
    from_crop = crop_features(crop[None])
    assert list(from_crop.columns) == feature_names()
    assert from_crop["area"][0] == pytest.approx(native.loc[1, "area"])
    assert from_crop["eccentricity"][0] == pytest.approx(native.loc[1, "eccentricity"], abs=1e-6)


def test_crop_mask_keeps_largest_component_and_handles_empty_crops():
    crops = np.zeros((3, 20, 20))
    crops[0, 5:15, 5:15] = 0.5
    crops[0, 7:9, 7:9] = 0.0  # hole is filled
    crops[0, 0:2, 18:20] = 0.5  # speck is dropped
    crops[1, 3:6, 3:6] = 0.01  # below threshold
    masks = crop_mask(crops, threshold=0.02)
    assert masks[0].sum() == 100 and not masks[0, 0, 19]
    assert not masks[1].any()
    df = crop_features(crops)
    assert df.loc[1, "area"] == 0 and df.loc[1, "radial_1"] == 1.0
    assert np.isfinite(df.to_numpy()).all()


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_match_labels_invariant_to_label_ids_and_symmetric(seed):
    rng = np.random.default_rng(seed)
    truth = ndi.label(ndi.gaussian_filter(rng.random((24, 24)), 1.5) > 0.5)[0]
    pred = ndi.label(ndi.gaussian_filter(rng.random((24, 24)), 1.5) > 0.5)[0]
    perm = np.r_[0, rng.permutation(np.arange(1, pred.max() + 1)) + 100]
    a = match_labels(pred, truth)
    b = match_labels(perm[pred], truth)
    c = match_labels(truth, pred)
    assert (a["tp"], a["fp"], a["fn"]) == (b["tp"], b["fp"], b["fn"])
    assert (a["tp"], a["fp"], a["fn"]) == (c["tp"], c["fn"], c["fp"])
    assert match_labels(truth, truth)["f1"] == 1.0
