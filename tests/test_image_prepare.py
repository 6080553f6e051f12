"""Reading fields, cropping nuclei and building the image AnnData."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage as ndi

from cellbridge import InputError
from cellbridge._io import write_h5ad
from cellbridge.preprocess.crops import canonical_orientation
from cellbridge.preprocess.image import (
    annotate_nuclei,
    find_image_files,
    find_mask_file,
    match_nuclei,
    plot_image_qc,
    prepare_image,
    read_field,
    read_label_mask,
)
from cellbridge.preprocess.morphology import feature_names

OBS_COLUMNS = [
    "source_file",
    "label",
    "centroid_y",
    "centroid_x",
    "bbox_min_row",
    "bbox_min_col",
    "bbox_max_row",
    "bbox_max_col",
    "domain",
]


def disc(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def make_field(nuclei, size=96, rng=None, background=100.0):
    """Field and true labels from ``(cy, cx, r, brightness)`` tuples."""
    rng = rng or np.random.default_rng(0)
    labels = np.zeros((size, size), dtype=np.int32)
    for k, (cy, cx, r, _) in enumerate(nuclei, start=1):
        labels[disc(labels.shape, cy, cx, r) & (labels == 0)] = k
    img = np.zeros((size, size))
    for k, (_, _, _, b) in enumerate(nuclei, start=1):
        img[labels == k] = b
    img = rng.poisson(ndi.gaussian_filter(img, 1.0) + background).astype(np.uint16)
    return img, labels


FIELD_A = [(25, 25, 8, 800), (25, 65, 6, 500), (65, 40, 9, 900)]
FIELD_B = [(30, 30, 7, 700), (60, 64, 8, 400)]


@pytest.fixture
def field_dir(tmp_path):
    """Two 16-bit TIFF fields with well separated nuclei."""
    folder = tmp_path / "fields"
    folder.mkdir()
    rng = np.random.default_rng(1)
    truth = []
    for name, nuclei in (("a", FIELD_A), ("b", FIELD_B)):
        img, _ = make_field(nuclei, rng=rng)
        tifffile.imwrite(folder / f"{name}.tif", img)
        truth += [(f"{name}.tif", cy, cx) for cy, cx, _, _ in nuclei]
    return folder, pd.DataFrame(truth, columns=["source_file", "centroid_y", "centroid_x"])


# --------------------------------------------------------------------------- readers


def test_read_tiff_2d_and_3d_stack_max_projection(tmp_path):
    plane = np.arange(64, dtype=np.uint16).reshape(8, 8)
    tifffile.imwrite(tmp_path / "f.tif", plane)
    np.testing.assert_array_equal(read_field(tmp_path / "f.tif"), plane)
    stack = np.stack([plane, plane[::-1] * 2, np.zeros_like(plane), plane, plane, plane])
    tifffile.imwrite(tmp_path / "z.tif", stack)
    out = read_field(tmp_path / "z.tif")
    assert out.shape == (8, 8) and out.dtype == np.float32
    np.testing.assert_array_equal(out, stack.max(axis=0))


def test_read_png_rgb_with_identical_channels(tmp_path):
    from skimage import io as skio

    grey = (np.arange(100).reshape(10, 10) * 2).astype(np.uint8)
    skio.imsave(tmp_path / "g.png", np.dstack([grey] * 3), check_contrast=False)
    np.testing.assert_array_equal(read_field(tmp_path / "g.png"), grey)
    colour = np.dstack([grey, grey[::-1], grey.T])
    skio.imsave(tmp_path / "c.png", colour, check_contrast=False)
    with pytest.raises(InputError, match=r"c\.png.*channel"):
        read_field(tmp_path / "c.png")
    np.testing.assert_array_equal(read_field(tmp_path / "c.png", channel=1), grey[::-1])


def test_read_multichannel_tiff_needs_channel(tmp_path):
    data = np.stack([np.full((6, 6), v, dtype=np.uint16) for v in (1, 2)])
    tifffile.imwrite(tmp_path / "mc.tif", data, metadata={"axes": "CYX"})
    with pytest.raises(InputError, match="channel"):
        read_field(tmp_path / "mc.tif")
    assert read_field(tmp_path / "mc.tif", channel=1).max() == 2
    with pytest.raises(InputError, match="channel 5"):
        read_field(tmp_path / "mc.tif", channel=5)


def test_reader_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="nowhere"):
        find_image_files(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(InputError, match="empty.*no image"):
        find_image_files(empty)
    with pytest.raises(InputError, match="glob pattern"):
        find_image_files(str(tmp_path / "*.tif"))
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"this is not a tiff")
    with pytest.raises(InputError, match=r"broken\.tif.*cannot read"):
        read_field(bad)
    tifffile.imwrite(tmp_path / "line.tif", np.arange(10, dtype=np.uint16)[None, :])
    with pytest.raises(InputError, match=r"line\.tif"):
        read_field(tmp_path / "line.tif")
    with pytest.raises(InputError, match=r"broken\.tif"):
        prepare_image(bad)


def test_mask_files_are_found_and_not_listed_as_fields(tmp_path):
    for name in ("f1.tif", "f1_mask.tif", "f2.tif", "f3.png", "f3_labels.png"):
        tifffile.imwrite(tmp_path / name, np.zeros((4, 4), np.uint8)) if name.endswith(".tif") else (
            tmp_path / name
        ).write_bytes(b"")
    (tmp_path / "masks").mkdir()
    tifffile.imwrite(tmp_path / "masks" / "f2.tif", np.zeros((4, 4), np.uint8))
    assert [p.name for p in find_image_files(tmp_path)] == ["f1.tif", "f2.tif", "f3.png"]
    assert find_mask_file(tmp_path / "f1.tif").name == "f1_mask.tif"
    assert find_mask_file(tmp_path / "f2.tif") == tmp_path / "masks" / "f2.tif"
    assert find_mask_file(tmp_path / "f3.png").name == "f3_labels.png"
    assert [p.name for p in find_image_files(str(tmp_path / "f*.tif"))] == ["f1.tif", "f2.tif"]


def test_binary_mask_is_split_into_objects(tmp_path):
    m = np.zeros((20, 20), np.uint8)
    m[2:6, 2:6] = 255
    m[10:15, 10:15] = 255
    tifffile.imwrite(tmp_path / "m.tif", m)
    assert read_label_mask(tmp_path / "m.tif").max() == 2
    with pytest.raises(InputError, match=r"m\.tif.*shape"):
        read_label_mask(tmp_path / "m.tif", shape=(10, 10))


# --------------------------------------------------------------------------- prepare_image


def test_anndata_contract(field_dir, tmp_path):
    folder, _ = field_dir
    adata = prepare_image(folder, domain="nuclei", crop_size=24)
    assert adata.n_obs == 5
    assert list(adata.obs.columns[: len(OBS_COLUMNS)]) == OBS_COLUMNS
    assert adata.obs_names.is_unique
    assert set(adata.obs_names) >= {"a_1", "b_1"}
    assert (adata.obs["domain"] == "nuclei").all()
    assert isinstance(adata.obs["domain"].dtype, pd.CategoricalDtype)
    img = adata.obsm["image"]
    assert img.shape == (5, 24, 24) and img.dtype == np.float32
    assert 0.0 <= img.min() and img.max() <= 1.0 and img.max() > 0.9
    assert adata.X.dtype == np.float32 and list(adata.var_names) == feature_names()
    assert np.isfinite(adata.X).all()
    assert list(adata.obsm["morphology_native"].columns) == feature_names(groups=("shape", "intensity"))
    meta = adata.uns["cellbridge"]
    assert meta["modality"] == "image" and meta["domain"] == "nuclei" and meta["source"] == str(folder)
    assert meta["params"]["crop_size"] == 24 and meta["params"]["window"] == "fixed"
    assert meta["params"]["window_px"] > 0 and "version" in meta
    # Centroids and boxes refer to the field.
    a = adata.obs[adata.obs["source_file"] == "a.tif"]
    row = a.iloc[np.argmin(np.hypot(a["centroid_y"] - 65, a["centroid_x"] - 40))]
    assert (row.centroid_y, row.centroid_x) == pytest.approx((65, 40), abs=0.5)
    assert row.name == f"a_{row.label}"
    assert row.bbox_min_row < row.centroid_y < row.bbox_max_row
    # X is exactly what crop_features gives for the stored crops, so features of
    # predicted crops are directly comparable.
    from cellbridge.preprocess.morphology import crop_features

    np.testing.assert_allclose(crop_features(img).to_numpy(np.float32), adata.X, rtol=1e-5, atol=1e-6)
    out = write_h5ad(adata, tmp_path / "image.h5ad")
    back = ad.read_h5ad(out)
    np.testing.assert_array_equal(back.obsm["image"], img)


def test_background_and_neighbours_masked_to_zero(tmp_path):
    # Two touching nuclei: each crop must show only its own nucleus.
    img, labels = make_field([(48, 40, 9, 800), (48, 57, 9, 800)])
    tifffile.imwrite(tmp_path / "pair.tif", img)
    tifffile.imwrite(tmp_path / "pair_mask.tif", labels)
    adata = prepare_image(tmp_path / "pair.tif", window="fixed", window_size=48, crop_size=48)
    assert adata.n_obs == 2
    for crop in adata.obsm["image"]:
        fg = crop > 0
        assert ndi.label(fg)[1] == 1
        assert fg.sum() == pytest.approx(np.pi * 81, rel=0.1)  # one nucleus, not two
        assert crop[0].max() == 0 and crop[:, -1].max() == 0


def test_border_and_size_filters(tmp_path):
    nuclei = [(4, 40, 7, 800), (48, 48, 9, 800), (75, 20, 3, 800), (75, 75, 6, 800)]
    img, _ = make_field(nuclei)
    tifffile.imwrite(tmp_path / "f.tif", img)
    kept = prepare_image(tmp_path / "f.tif", min_area=50)
    centres = kept.obs[["centroid_y", "centroid_x"]].round().to_numpy()
    assert sorted(map(tuple, centres)) == [(48, 48), (75, 75)]  # border nucleus and the tiny one dropped
    big_only = prepare_image(tmp_path / "f.tif", min_area=50, max_area=200)
    assert big_only.obs[["centroid_y", "centroid_x"]].round().to_numpy().tolist() == [[75, 75]]
    with_border = prepare_image(tmp_path / "f.tif", min_area=50, exclude_border=False)
    assert with_border.n_obs == 3


def test_fixed_window_keeps_size_and_bbox_window_normalises_it(tmp_path):
    img, _ = make_field([(30, 30, 5, 800), (60, 60, 10, 800)])
    tifffile.imwrite(tmp_path / "f.tif", img)
    fixed = prepare_image(tmp_path / "f.tif", window="fixed")
    small, large = fixed.obs_names[np.argsort(fixed.obs["centroid_y"].to_numpy())]
    ratio = fixed[large, "area"].X[0, 0] / fixed[small, "area"].X[0, 0]
    assert ratio == pytest.approx(4, rel=0.3)  # (10 / 5)^2
    tight = prepare_image(tmp_path / "f.tif", window="bbox")
    ratio = tight[large, "area"].X[0, 0] / tight[small, "area"].X[0, 0]
    assert ratio == pytest.approx(1, abs=0.25)
    native = fixed.obsm["morphology_native"]
    assert native.loc[large, "area"] == pytest.approx(np.pi * 100, rel=0.15)


def ellipse_patch(angle_deg: float, size: int = 41) -> np.ndarray:
    """A 2:1 ellipse at ``angle_deg``, brighter at one end of its major axis."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    t = np.radians(angle_deg)
    u, v = xx * np.cos(t) + yy * np.sin(t), -xx * np.sin(t) + yy * np.cos(t)
    inside = (u / 12) ** 2 + (v / 6) ** 2 <= 1
    return np.where(inside, 1.0 + 0.5 * (u > 4), 0.0).astype(np.float32)


def second_moments(patch):
    rows, cols = np.nonzero(patch > 0.5)
    y, x = rows - rows.mean(), cols - cols.mean()
    return (x * x).mean(), (y * y).mean(), (x * y).mean()


@pytest.mark.parametrize("angle", [0.0, 30.0, 75.0, 120.0, -40.0, 180.0])
def test_canonical_orientation_aligns_major_axis_and_bright_end(angle):
    out = canonical_orientation(ellipse_patch(angle))
    var_x, var_y, cov = second_moments(out)
    assert var_x > 3 * var_y  # major axis horizontal
    assert abs(cov) < 0.05 * var_x
    centre = (out.shape[1] - 1) / 2
    bright_x = np.nonzero(out > 1.2)[1].mean()
    assert bright_x < centre  # the brighter end always lands on the same (left) side
    assert out.sum() == pytest.approx(ellipse_patch(angle).sum(), rel=0.08)  # nothing cut off


def test_orientation_align_removes_angle_from_crops(tmp_path):
    # The same elongated nucleus at two angles: aligned crops agree, kept crops do not.
    size = 96
    labels = np.zeros((size, size), dtype=np.int32)
    img = np.full((size, size), 100.0)
    for k, (cy, cx, angle) in enumerate([(28, 28, 20.0), (68, 66, 110.0)], start=1):
        patch = ellipse_patch(angle)
        sl = (slice(cy - 20, cy + 21), slice(cx - 20, cx + 21))
        labels[sl][patch > 0] = k
        img[sl] += 600 * patch
    tifffile.imwrite(tmp_path / "f.tif", img.astype(np.uint16))
    tifffile.imwrite(tmp_path / "f_mask.tif", labels)
    aligned = prepare_image(tmp_path / "f.tif", window="fixed", window_size=44, crop_size=44)
    kept = prepare_image(tmp_path / "f.tif", window="fixed", window_size=44, crop_size=44, orientation="keep")
    assert aligned.uns["cellbridge"]["params"]["orientation"] == "align"

    def crop_difference(adata):
        a, b = adata.obsm["image"]
        return np.abs(a - b).sum() / np.abs(a).sum()

    assert crop_difference(aligned) < 0.35 * crop_difference(kept)
    with pytest.raises(ValueError, match="orientation"):
        prepare_image(tmp_path / "f.tif", orientation="random")


def test_dataset_normalisation_keeps_relative_brightness(tmp_path):
    img, _ = make_field([(30, 30, 8, 300), (60, 60, 8, 900)], background=50)
    tifffile.imwrite(tmp_path / "f.tif", img)
    adata = prepare_image(tmp_path / "f.tif")
    order = np.argsort(adata.obs["centroid_y"].to_numpy())
    dim, bright = adata.X[order, list(adata.var_names).index("intensity_mean")]
    assert bright / dim == pytest.approx(3, rel=0.2)  # background-subtracted ratio 900 / 300
    per_crop = prepare_image(tmp_path / "f.tif", normalize="crop")
    assert per_crop.obsm["image"].reshape(2, -1).max(axis=1) == pytest.approx([1.0, 1.0])


def test_user_masks_beside_fields_are_used(field_dir):
    folder, _ = field_dir
    img = tifffile.imread(folder / "a.tif")
    mask = np.zeros(img.shape, np.uint16)
    mask[disc(img.shape, 25, 25, 8)] = 7
    mask[disc(img.shape, 65, 40, 9)] = 12
    (folder / "masks").mkdir()
    tifffile.imwrite(folder / "masks" / "a.tif", mask)
    adata = prepare_image(folder)
    assert sorted(adata.obs.loc[adata.obs["source_file"] == "a.tif", "label"]) == [7, 12]
    assert (adata.obs["source_file"] == "b.tif").sum() == 2  # segmented
    with pytest.raises(InputError, match=r"b\.tif.*no mask"):
        prepare_image(folder, segmentation="masks")
    ignored = prepare_image(folder, segmentation="watershed")
    assert (ignored.obs["source_file"] == "a.tif").sum() == 3


def test_empty_field_warns_and_no_nucleus_anywhere_errors(field_dir, tmp_path):
    folder, _ = field_dir
    tifffile.imwrite(folder / "c_blank.tif", np.full((96, 96), 100, np.uint16))
    with pytest.warns(UserWarning, match=r"c_blank\.tif.*no nucleus"):
        adata = prepare_image(folder)
    assert adata.n_obs == 5
    blank = tmp_path / "blank"
    blank.mkdir()
    tifffile.imwrite(blank / "x.tif", np.full((64, 64), 100, np.uint16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InputError, match=r"blank.*no nucleus.*x\.tif"):
            prepare_image(blank)


def test_annotations_join_by_nearest_centroid(field_dir, caplog):
    folder, truth = field_dir
    table = truth.copy()
    table["cell_type"] = ["t1", "t2", "t3", "t4", "t5"]
    table["label"] = range(100, 105)  # collides with obs["label"]
    table = table.drop(index=4)  # the second nucleus of b.tif has no annotation
    table.loc[len(table)] = ["a.tif", 90.0, 90.0, "far", 999]  # annotation with no nucleus
    table["source_file"] = "/some/where/" + table["source_file"]  # paths match by file name
    with caplog.at_level(logging.INFO, logger="cellbridge"):
        adata = prepare_image(folder, annotations=table, annotation_max_distance=3.0)
    assert "1 of 5 nuclei have no annotated nucleus" in caplog.text
    key = (
        adata.obs["source_file"]
        + ":"
        + adata.obs["centroid_y"].round().astype(int).astype(str)
        + ","
        + adata.obs["centroid_x"].round().astype(int).astype(str)
    )
    cell_type = dict(zip(key, adata.obs["cell_type"], strict=True))
    assert cell_type["a.tif:25,25"] == "t1"
    assert cell_type["a.tif:25,65"] == "t2"
    assert cell_type["a.tif:65,40"] == "t3"
    assert cell_type["b.tif:30,30"] == "t4"
    assert pd.isna(cell_type["b.tif:60,64"])
    assert "label_annotation" in adata.obs and adata.obs["label"].dtype.kind == "i"
    # an integer annotation stays integer where a nucleus has none (not float with NaN)
    assert adata.obs["label_annotation"].dtype == "Int64" and adata.obs["label_annotation"].isna().sum() == 1


def test_annotations_from_tsv_file(field_dir, tmp_path):
    folder, truth = field_dir
    truth.assign(split=["train", "test", "train", "test", "train"]).to_csv(tmp_path / "ann.tsv", sep="\t", index=False)
    adata = prepare_image(folder, annotations=tmp_path / "ann.tsv")
    assert adata.obs["split"].notna().all()
    bad = tmp_path / "bad.tsv"
    truth.drop(columns="centroid_x").to_csv(bad, sep="\t", index=False)
    with pytest.raises(InputError, match=r"bad\.tsv.*centroid_x"):
        annotate_nuclei(adata.obs, bad)


def test_match_nuclei_per_file_within_distance():
    obs = pd.DataFrame(
        {"source_file": ["a.tif", "a.tif", "b.tif", "c.tif"], "centroid_y": [10, 50, 10, 1], "centroid_x": [10, 50, 10, 1]}
    )
    table = pd.DataFrame(
        {"source_file": ["b.tif", "a.tif", "a.tif"], "centroid_y": [11, 52, 10.5], "centroid_x": [10, 50, 9]}
    )
    np.testing.assert_array_equal(match_nuclei(obs, table, max_distance=3), [2, 1, 0, -1])
    np.testing.assert_array_equal(match_nuclei(obs, table, max_distance=1.5), [2, -1, 0, -1])


def test_ready_crops_from_npy_and_h5ad(tmp_path):
    rng = np.random.default_rng(0)
    crops = np.zeros((6, 40, 40), dtype=np.float32)
    for k in range(6):
        crops[k][disc((40, 40), 20, 20, 6 + k)] = rng.uniform(100, 500)
    np.save(tmp_path / "crops.npy", crops)
    adata = prepare_image(tmp_path / "crops.npy", crop_size=32)
    assert adata.obsm["image"].shape == (6, 32, 32)
    assert list(adata.obs_names) == [f"crops_{i}" for i in range(6)]
    assert adata.obs["source_file"].eq("crops.npy").all()
    assert np.all(np.diff(adata[:, "area"].X[:, 0]) > 0)  # growing discs
    assert adata.obsm["image"].max() <= 1.0
    path = write_h5ad(adata, tmp_path / "ready.h5ad")
    again = prepare_image(path, crop_size=32, domain="other")
    assert again.n_obs == 6 and (again.obs["domain"] == "other").all()
    np.save(tmp_path / "flat.npy", np.zeros((4, 4)))
    with pytest.raises(InputError, match=r"flat\.npy.*\(n, H, W\)"):
        prepare_image(tmp_path / "flat.npy")
    with pytest.raises(InputError, match="carry no centroids"):
        prepare_image(tmp_path / "crops.npy", annotations=pd.DataFrame(columns=["source_file", "centroid_y", "centroid_x"]))


def test_image_qc_png(field_dir, tmp_path):
    folder, _ = field_dir
    adata = prepare_image(folder)
    counts = adata.uns["cellbridge"]["segmentation"]
    assert counts["kept"] == adata.n_obs and counts["n_fields"] == len(list(folder.glob("*.tif")))
    assert counts["n_objects"] == counts["kept"] + counts["dropped_small"] + counts["dropped_large"] + counts["dropped_border"]
    out = plot_image_qc(adata, tmp_path / "qc" / "sheet.png", n=4, seed=1)
    assert out.exists() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp file left


def test_simulated_demo_fields_match_truth(tmp_path):
    simulate = pytest.importorskip("cellbridge.simulate", reason="demo simulator not available")
    from cellbridge.preprocess.segment import match_labels

    paths = simulate.simulate_demo(tmp_path, n_cells=40, n_genes=100, atac=False, seed=3)
    adata = prepare_image(paths["fields"], annotations=paths["image_labels"])
    truth = pd.read_csv(paths["truth"], sep="\t")
    truth = truth[truth["domain"] == "image"].reset_index(drop=True)
    idx = match_nuclei(adata.obs, truth)
    assert (idx >= 0).mean() >= 0.95
    assert adata.obs["cell_type"].notna().mean() >= 0.95
    matched = idx >= 0
    assert (adata.obs["cell_type"].to_numpy()[matched] == truth["cell_type"].to_numpy()[idx[matched]]).all()
    field = sorted(Path(paths["fields"]).iterdir())[0]
    from cellbridge.preprocess.segment import segment_nuclei

    res = match_labels(segment_nuclei(tifffile.imread(field)), tifffile.imread(Path(paths["masks"]) / field.name))
    assert res["f1"] >= 0.9
