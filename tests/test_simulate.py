"""Tests of the demo simulator: realism of each modality and that every domain carries the state."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage, sparse, stats
from skimage.measure import regionprops
from sklearn.decomposition import PCA
from sklearn.metrics import r2_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cellbridge.simulate import (
    MITO_GENES,
    default_type_proportions,
    nucleus_extent,
    nucleus_traits,
    place_nuclei,
    render_field,
    render_nucleus,
    simulate_atac,
    simulate_demo,
    simulate_images,
    simulate_rna,
    simulate_states,
)

N = 300


@pytest.fixture(scope="module")
def states() -> pd.DataFrame:
    return simulate_states(N, seed=11)


@pytest.fixture(scope="module")
def rna(states) -> ad.AnnData:
    return simulate_rna(states, n_genes=2000, seed=12)


@pytest.fixture(scope="module")
def atac(states) -> ad.AnnData:
    return simulate_atac(states, n_peaks=500, seed=13)


@pytest.fixture(scope="module")
def images(states):
    return simulate_images(states, field_size=256, nuclei_per_field=8, seed=14)


def _log_normalise(counts: np.ndarray) -> np.ndarray:
    return np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4)


# ----------------------------------------------------------------------------- states


def test_states_have_unequal_type_proportions_and_overlapping_activation(states):
    counts = states["cell_type"].value_counts(sort=False).to_numpy()
    expected = default_type_proportions(5) * N
    assert np.all(np.abs(counts - expected) <= 1)
    assert len(set(counts)) == 5  # all proportions differ
    act = states["activation"]
    assert act.between(0, 1).all()
    q = act.groupby(states["cell_type"], observed=True).quantile([0.1, 0.9]).unstack()
    # every type's central 80% range overlaps every other type's
    assert (q[0.1].max() < q[0.9].min())
    assert 0.1 < states["cell_cycle"].std() < 0.5


def test_states_hold_out_the_requested_fraction(states):
    assert (states["split"] == "test").sum() == round(0.2 * N)
    assert states.index.is_unique


def test_same_seed_same_data_other_seed_different():
    a, b, c = (simulate_states(80, seed=s) for s in (1, 1, 2))
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["activation"], c["activation"])
    r1, r2, r3 = (simulate_rna(a, n_genes=200, seed=s) for s in (5, 5, 6))
    assert (r1.X != r2.X).nnz == 0 and (r1.X != r3.X).nnz > 0
    assert r1.var_names.equals(r2.var_names)
    t1, t2 = (simulate_atac(a, n_peaks=100, seed=7) for _ in range(2))
    assert (t1.X != t2.X).nnz == 0
    i1, i2, i3 = (simulate_images(a.iloc[:20], field_size=128, nuclei_per_field=4, seed=s) for s in (8, 8, 9))
    assert all(np.array_equal(x, y) for x, y in zip(i1.fields, i2.fields, strict=True))
    assert not np.array_equal(i1.fields[0], i3.fields[0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_types": 1}, "n_types"),
        ({"n_cells": 3, "n_types": 5}, "n_cells"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"field_size": 32}, "field_size"),
        ({"nuclei_per_field": 0}, "nuclei_per_field"),
        ({"n_genes": 20}, "n_genes"),
        ({"n_peaks": 5}, "n_peaks"),
        ({"n_cells": 10.5}, "n_cells"),
    ],
)
def test_simulate_demo_rejects_bad_arguments_before_writing(tmp_path, kwargs, match):
    out = tmp_path / "demo"
    with pytest.raises(ValueError, match=match):
        simulate_demo(out, **{"n_cells": 50, **kwargs})
    assert not out.exists()


# ----------------------------------------------------------------------------- RNA


def test_rna_counts_are_realistic(rna):
    assert sparse.issparse(rna.X) and rna.X.format == "csr"
    x = rna.X.toarray()
    assert x.min() >= 0 and np.array_equal(x, np.round(x))
    assert rna.obs_names.str.startswith("rna_").all()
    assert set(MITO_GENES) <= set(rna.var_names) and rna.var_names.str.startswith("MT-").sum() == 13
    sparsity = (x == 0).mean()
    assert 0.72 <= sparsity <= 0.92, sparsity
    lib = x.sum(axis=1)
    assert 2500 < np.median(lib) < 6500
    assert lib.std() / lib.mean() > 0.2
    mito = x[:, rna.var_names.str.startswith("MT-")].sum(axis=1) / lib
    assert 0.01 < np.median(mito) < 0.10 and mito.max() < 0.25
    mean, var = x.mean(axis=0), x.var(axis=0)
    expressed = mean > 0.5
    assert (var[expressed] > mean[expressed]).mean() > 0.9  # overdispersed


def test_rna_markers_and_activation_programs_follow_state(rna, states):
    logx = _log_normalise(rna.X.toarray())
    program, gtype = rna.var["sim_program"].to_numpy(), rna.var["sim_type"].to_numpy()
    types = states["cell_type"].astype(str).to_numpy()
    for t in np.unique(types):
        markers = (program == "marker") & (gtype == t)
        inside = logx[types == t][:, markers].mean()
        outside = logx[types != t][:, markers].mean()
        assert inside > outside + 0.5, (t, inside, outside)
    act = states["activation"].to_numpy()
    rho = np.array([stats.spearmanr(logx[:, j], act)[0] if logx[:, j].std() > 0 else 0 for j in range(logx.shape[1])])
    assert np.median(rho[program == "activation_up"]) > 0.2
    assert np.median(rho[program == "activation_down"]) < -0.2
    assert np.abs(np.median(rho[program == "noise"])) < 0.05


# ----------------------------------------------------------------------------- ATAC


def test_atac_is_sparse_binary_ish_and_follows_type(atac, states):
    x = atac.X.toarray()
    assert set(np.unique(x)) <= {0.0, 1.0, 2.0}
    assert (x == 2).sum() < (x == 1).sum()
    assert 0.88 <= (x == 0).mean() <= 0.97
    depth = (x > 0).sum(axis=1)
    assert depth.std() / depth.mean() > 0.2
    assert atac.obs_names.str.startswith("atac_").all()
    types = states["cell_type"].astype(str).to_numpy()
    for t in np.unique(types):
        peaks = atac.var["sim_type"].to_numpy() == t
        assert (x[types == t][:, peaks] > 0).mean() > 2 * (x[types != t][:, peaks] > 0).mean()


# ----------------------------------------------------------------------------- images


def test_render_nucleus_mask_and_signal():
    row = {"radius": 10.0, "aspect": 1.4, "orientation": 0.3, "brightness": 800.0, "texture_contrast": 0.2,
           "texture_scale": 1.2, "radial_bias": 0.5, "irregularity": 0.05}  # fmt: skip
    signal, mask = render_nucleus(row, seed=0)
    assert signal.shape == mask.shape and signal.shape[0] % 2 == 1
    assert abs(mask.sum() - np.pi * 10.0**2) < 0.15 * np.pi * 10.0**2
    assert np.all(signal[~ndimage.binary_dilation(mask, iterations=2)] == 0)
    assert ndimage.label(mask)[1] == 1
    assert signal.shape[0] // 2 >= nucleus_extent(row) - 1


def test_fields_look_like_raw_microscopy(images):
    # fields are filled up to 8 nuclei; only crowding opens a field early
    assert np.ceil(N / 8) <= len(images.fields) <= 1.25 * np.ceil(N / 8)
    for image, labels in zip(images.fields[:10], images.masks[:10], strict=True):
        assert image.dtype == np.uint16 and image.shape == (256, 256)
        background = image[labels == 0].astype(float)
        assert 100 < np.median(background) < 200  # camera offset + autofluorescence
        assert background.std() > 2  # shot + read noise and uneven illumination
        assert image[labels > 0].mean() > np.median(background) + 200


def test_masks_hold_separate_nuclei_inside_the_field(images):
    for labels in images.masks:
        ids = np.unique(labels[labels > 0])
        assert np.array_equal(ids, np.arange(1, ids.size + 1)) and 1 <= ids.size <= 8
        # one connected component per label
        for lab, sl in enumerate(ndimage.find_objects(labels), start=1):
            assert ndimage.label(labels[sl] == lab)[1] == 1
        # no label on or next to the border
        assert not labels[:2].any() and not labels[-2:].any() and not labels[:, :2].any() and not labels[:, -2:].any()
        # nuclei do not touch: growing each by 1 px never reaches another label
        touching = (ndimage.grey_dilation(labels, size=3) != labels) & (labels > 0)
        assert not touching.any()
    radius = np.sqrt(np.concatenate([np.bincount(m.ravel())[1:] for m in images.masks]) / np.pi)
    assert radius.min() > 6 and radius.max() < 18


def test_place_nuclei_opens_new_fields_when_full():
    placement = place_nuclei(np.full(40, 20.0), field_size=128, max_per_field=8, seed=0)
    per_field = placement["field"].value_counts()
    assert per_field.max() <= 8 and placement["field"].nunique() >= 5
    for _, grp in placement.groupby("field"):
        d = np.hypot(*(grp[["y", "x"]].to_numpy()[:, None] - grp[["y", "x"]].to_numpy()[None]).transpose(2, 0, 1))
        assert np.all(d[np.triu_indices(len(grp), 1)] > 40)
    with pytest.raises(ValueError, match="too small"):
        place_nuclei(np.array([40.0]), field_size=64)


def test_render_field_rejects_mismatched_positions(states):
    traits = nucleus_traits(states.iloc[:2], seed=0)
    with pytest.raises(ValueError, match="positions"):
        render_field(traits, np.array([[50, 50]]), field_size=128)


def _nucleus_features(images) -> pd.DataFrame:
    """Simple per-nucleus morphology from the true masks (what a CellProfiler-style pipeline measures)."""
    rows = []
    for f, (image, labels) in enumerate(zip(images.fields, images.masks, strict=True)):
        img = image.astype(float)
        signal = img - np.median(img[labels == 0])
        highpass = img - ndimage.gaussian_filter(img, 2)
        for rp in regionprops(labels):
            m, s = rp.image, signal[rp.slice]
            depth = ndimage.distance_transform_edt(m)
            depth /= depth.max()
            core = ndimage.binary_erosion(m, iterations=2)
            rows.append(
                {
                    "field": f,
                    "label": rp.label,
                    "area": rp.area,
                    "mean_intensity": s[m].mean(),
                    "eccentricity": rp.eccentricity,
                    "centre_periphery": s[m & (depth > 0.5)].mean() / s[m & (depth <= 0.5)].mean(),
                    "texture": highpass[rp.slice][core].std() / s[m].mean(),
                }
            )
    feats = pd.DataFrame(rows)
    ids = images.nuclei.reset_index()[["cell_id", "field", "label"]]
    return feats.merge(ids, on=["field", "label"]).set_index("cell_id")


def test_morphology_follows_state(images, states):
    feats = _nucleus_features(images).loc[states.index]
    act = states["activation"].to_numpy()
    assert stats.spearmanr(feats["area"], act)[0] > 0.3
    assert stats.spearmanr(feats["centre_periphery"], act)[0] > 0.3
    groups = [feats.loc[states["cell_type"] == t] for t in states["cell_type"].cat.categories]
    for col in ("area", "mean_intensity", "eccentricity", "centre_periphery", "texture"):
        assert stats.kruskal(*(g[col] for g in groups)).pvalue < 1e-3, col


@pytest.fixture(scope="module")
def informative_states() -> pd.DataFrame:
    return simulate_states(800, seed=21)


def test_images_carry_cell_type_and_activation(informative_states):
    """The most important property: simple morphology from the true masks predicts the state."""
    st = informative_states
    images = simulate_images(st, seed=22)
    feats = _nucleus_features(images).loc[st.index]
    x = feats[["area", "mean_intensity", "eccentricity", "centre_periphery", "texture"]].to_numpy()
    y = st["cell_type"].cat.codes.to_numpy()
    # folds stratified by type, reused for the activation regression
    cv = list(StratifiedKFold(5, shuffle=True, random_state=0).split(x, y))
    pred = cross_val_predict(make_pipeline(StandardScaler(), KNeighborsClassifier(5)), x, y, cv=cv)
    accuracy = (pred == y).mean()
    act_pred = cross_val_predict(make_pipeline(StandardScaler(), KNeighborsRegressor(10)), x, st["activation"], cv=cv)
    r2 = r2_score(st["activation"], act_pred)
    print(f"image morphology: 5-NN type accuracy {accuracy:.3f}, activation R2 {r2:.3f}")
    assert accuracy > 0.9
    assert r2 > 0.6
    # not trivially easy: per-nucleus noise keeps single features ambiguous
    single = cross_val_predict(KNeighborsClassifier(5), x[:, [0]], y, cv=cv)
    assert (single == y).mean() < 0.8


def test_rna_carries_cell_type_and_activation(informative_states):
    st = informative_states
    rna = simulate_rna(st, seed=23)
    logx = _log_normalise(rna.X.toarray())
    top = np.argsort(-logx.var(axis=0))[:1000]
    z = StandardScaler().fit_transform(logx[:, top])
    pcs = PCA(50, random_state=0).fit_transform(z)
    y = st["cell_type"].cat.codes.to_numpy()
    cv = list(StratifiedKFold(5, shuffle=True, random_state=0).split(pcs, y))
    accuracy = (cross_val_predict(KNeighborsClassifier(5), pcs, y, cv=cv) == y).mean()
    r2 = r2_score(st["activation"], cross_val_predict(KNeighborsRegressor(5), pcs, st["activation"], cv=cv))
    print(f"RNA PCA(50): 5-NN type accuracy {accuracy:.3f}, activation R2 {r2:.3f}")
    assert accuracy > 0.95
    assert r2 > 0.8


# ----------------------------------------------------------------------------- demo on disk


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    paths = simulate_demo(out, n_cells=120, n_genes=300, n_peaks=150, field_size=160, nuclei_per_field=6, seed=3)
    return out, paths


def test_demo_writes_every_output(demo):
    out, paths = demo
    assert set(paths) == {"rna", "atac", "fields", "masks", "truth", "image_labels"}
    assert all(p.exists() for p in paths.values())
    fields = sorted(p.name for p in paths["fields"].iterdir())
    assert fields == sorted(p.name for p in paths["masks"].iterdir())
    assert fields[0] == "field_000.tif"
    assert not list(out.glob(".*"))  # no temporary files left behind
    img = tifffile.imread(paths["fields"] / fields[0])
    assert img.dtype == np.uint16 and img.shape == (160, 160)
    rna = ad.read_h5ad(paths["rna"])
    assert rna.n_obs == 120 and {"cell_type", "split"} <= set(rna.obs)


def test_demo_truth_is_consistent_with_the_files(demo):
    out, paths = demo
    truth = pd.read_csv(paths["truth"], sep="\t")
    labels = pd.read_csv(paths["image_labels"], sep="\t")
    assert list(labels.columns) == ["source_file", "label", "centroid_y", "centroid_x", "cell_type", "split"]
    assert truth.groupby("domain").size().to_dict() == {"atac": 120, "image": 120, "rna": 120}
    assert truth.groupby("domain")["cell_id"].nunique().eq(120).all()
    rna, atac = ad.read_h5ad(paths["rna"]), ad.read_h5ad(paths["atac"])
    for domain, adata in (("rna", rna), ("atac", atac)):
        rows = truth[truth["domain"] == domain]
        assert list(rows["obs_name"]) == list(adata.obs_names)
        assert (rows["cell_type"].to_numpy() == adata.obs["cell_type"].astype(str).to_numpy()).all()
        assert (rows["split"].to_numpy() == adata.obs["split"].astype(str).to_numpy()).all()
    # obs names carry no pairing: the same suffix in two domains is (almost never) the same cell
    rna_ids = truth[truth["domain"] == "rna"].set_index("obs_name")["cell_id"]
    atac_ids = truth[truth["domain"] == "atac"].set_index("obs_name")["cell_id"]
    same = (rna_ids.to_numpy() == atac_ids.reindex(rna_ids.index.str.replace("rna_", "atac_")).to_numpy()).mean()
    assert same < 0.1
    assert not set(rna_ids) & {n.split("_", 1)[1] for n in rna_ids.index}
    # the domains are written in independent orders
    orders = [truth.loc[truth["domain"] == d, "cell_id"].to_list() for d in ("rna", "atac", "image")]
    assert orders[0] != orders[1] and orders[0] != orders[2]
    # image rows: label and centroid match the mask
    image_rows = truth[truth["domain"] == "image"]
    pd.testing.assert_frame_equal(
        image_rows[labels.columns].reset_index(drop=True), labels, check_dtype=False
    )
    for source, grp in image_rows.groupby("source_file"):
        mask = tifffile.imread(paths["masks"] / source)
        assert sorted(grp["label"]) == list(range(1, mask.max() + 1))
        centroids = ndimage.center_of_mass(mask > 0, mask, grp["label"].to_numpy())
        np.testing.assert_allclose(np.asarray(centroids), grp[["centroid_y", "centroid_x"]].to_numpy(), atol=1e-6)
    # the held-out cells are the same ids in every domain
    held_out = truth[truth["split"] == "test"]
    test_ids = [set(held_out.loc[held_out["domain"] == d, "cell_id"]) for d in ("rna", "atac", "image")]
    assert test_ids[0] == test_ids[1] == test_ids[2] and len(test_ids[0]) == 24
    assert (truth.groupby("cell_id")["cell_type"].nunique() == 1).all()
    assert (truth.groupby("cell_id")["activation"].nunique() == 1).all()


def test_demo_is_reproducible_and_cleans_stale_fields(tmp_path, demo):
    _, first = demo
    again = simulate_demo(tmp_path, n_cells=120, n_genes=300, n_peaks=150, field_size=160, nuclei_per_field=6, seed=3)
    pd.testing.assert_frame_equal(pd.read_csv(first["truth"], sep="\t"), pd.read_csv(again["truth"], sep="\t"))
    assert (ad.read_h5ad(first["rna"]).X != ad.read_h5ad(again["rna"]).X).nnz == 0
    name = "field_003.tif"
    assert np.array_equal(tifffile.imread(first["fields"] / name), tifffile.imread(again["fields"] / name))
    # a smaller rerun into the same folder leaves no fields of the earlier run behind; no ATAC when off
    (tmp_path / "atac.h5ad").unlink()
    smaller = simulate_demo(tmp_path, n_cells=20, n_genes=300, atac=False, field_size=160, nuclei_per_field=6, seed=3)
    assert "atac" not in smaller and not (tmp_path / "atac.h5ad").exists()
    n_fields = pd.read_csv(smaller["image_labels"], sep="\t")["source_file"].nunique()
    assert len(list(smaller["fields"].iterdir())) == n_fields == len(list(smaller["masks"].iterdir()))
    truth = pd.read_csv(smaller["truth"], sep="\t")
    assert set(truth["domain"]) == {"rna", "image"}
