"""Smoke tests for the peer benchmark: our SCOT implementation and benchmarks/peers_run.py.

Everything here runs in the main venv. The uniport / scotplus cases need the separate peers
venv (benchmarks/.venv-peers, from benchmarks/requirements-peers.txt) and skip without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _bench import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
PEERS_RUN = BENCH / "peers_run.py"
PEERS_PYTHON = BENCH / ".venv-peers" / "bin" / "python"
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


scot = load_benchmark("_scot")
peers_run = load_benchmark("peers_run")


# ----------------------------------------------------------------------------- data
def _clusters(rng: np.random.Generator, sizes=(20, 30, 40), dim: int = 5):
    """Well separated Gaussian clusters of distinct sizes (so GW can tell them apart)."""
    labels = np.repeat(np.arange(len(sizes)), sizes)
    centers = rng.normal(size=(len(sizes), dim)) * 6.0
    return centers[labels] + rng.normal(size=(labels.size, dim)) * 0.5, labels


@pytest.fixture
def rotated_pair():
    """x, and y = x rotated and its rows permuted; cluster labels for both."""
    rng = np.random.default_rng(0)
    x, labels = _clusters(rng)
    q, _ = np.linalg.qr(rng.normal(size=(x.shape[1], x.shape[1])))
    perm = rng.permutation(x.shape[0])
    return x, labels, (x @ q)[perm], labels[perm]


def _write_tiny_inputs(path: Path, *, n_per: int = 30, n_genes: int = 80, n_peaks: int = 70, seed: int = 0) -> None:
    """A tiny inputs.npz in peers_run's layout: 3 cell states, counts in both domains."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.array(["0h", "1h", "3h"]), n_per)
    n = labels.size
    state = np.repeat(np.arange(3), n_per)
    rna_rate = rng.gamma(2.0, 1.0, size=(3, n_genes)) * 2
    atac_rate = rng.uniform(0.05, 0.6, size=(3, n_peaks))
    rna = rng.poisson(rna_rate[state])
    atac = rng.poisson(atac_rate[state])
    ids = np.asarray([f"cell{i:03d}" for i in range(n)])
    p_rna, p_atac = rng.permutation(n), rng.permutation(n)
    store = {
        "rna_pca": peers_run.preprocess_rna(rna, n_components=10)[p_rna],
        "atac_svd": peers_run.preprocess_atac(atac, n_components=10)[p_atac],
        "cell_ids_rna": ids[p_rna],
        "cell_ids_atac": ids[p_atac],
        "labels_rna": labels[p_rna],
        "labels_atac": labels[p_atac],
    }
    peers_run.save_csr(store, "rna_counts", rna[p_rna])
    peers_run.save_csr(store, "atac_counts", atac[p_atac])
    np.savez(path, **store)


def _run_cli(python: Path | str, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(python), str(PEERS_RUN), *args], cwd=ROOT, env=ONE_THREAD,
        capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _read_result(path: Path) -> tuple[np.lib.npyio.NpzFile, dict, str]:
    res = np.load(path, allow_pickle=False)
    return res, json.loads(str(res["info"])), str(res["error"])


# ----------------------------------------------------------------------------- _scot
def test_geodesic_distances_are_a_normalised_metric_matrix(rotated_pair):
    x = rotated_pair[0]
    d = scot.geodesic_distances(x, k=5)
    assert d.shape == (x.shape[0],) * 2
    assert np.isfinite(d).all()
    np.testing.assert_allclose(d, d.T)
    assert np.all(np.diag(d) == 0)
    assert d.max() == pytest.approx(1.0) and d.min() >= 0
    # three separated clusters with k=5: disconnected pairs get the maximum distance
    labels = rotated_pair[1]
    assert np.all(d[labels == 0][:, labels == 2] == 1.0)


def test_barycentric_projection_of_a_permutation_coupling_is_the_permutation():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(6, 3))
    perm = rng.permutation(6)
    coupling = np.zeros((6, 6))
    coupling[np.arange(6), perm] = 1 / 6
    np.testing.assert_allclose(scot.barycentric_projection(coupling, y), y[perm])


def test_scot_coupling_maps_each_cluster_onto_its_rotated_copy(rotated_pair):
    x, lx, y, ly = rotated_pair
    coupling = scot.scot_coupling(x, y, k=10, epsilon=5e-3, max_iter=200)
    assert coupling.shape == (x.shape[0], y.shape[0])
    assert coupling.sum() == pytest.approx(1.0, abs=1e-6)
    block = np.array([[coupling[lx == a][:, ly == b].sum() for b in range(3)] for a in range(3)])
    # nearly all mass stays inside the matching cluster
    assert np.trace(block) > 0.99

    x_al, y_al = scot.scot_align(x, y, k=10, epsilon=5e-3, max_iter=200)
    assert x_al.shape == x.shape and y_al.shape == (y.shape[0], x.shape[1])
    np.testing.assert_allclose(np.linalg.norm(x_al, axis=1), 1.0)
    # every projected y cell lands nearest to an x cell of its own cluster
    nearest = np.argmin(((y_al[:, None, :] - x_al[None, :, :]) ** 2).sum(-1), axis=1)
    assert np.mean(lx[nearest] == ly) > 0.95


def test_self_tune_keeps_the_lowest_gw_and_honours_the_budget(rotated_pair):
    x, _, y, _ = rotated_pair
    res = scot.scot_self_tune(x, y, ks=[5, 10], epsilons=[1e-2, 5e-3], time_budget_s=None, max_iter=100)
    assert len(res.trials) == 4 and not res.skipped
    converged = [t for t in res.trials if t["converged"]]
    best = min(converged, key=lambda t: t["gw_dist"])
    assert (res.k, res.epsilon, res.gw_dist) == (best["k"], best["epsilon"], best["gw_dist"])
    assert res.y_aligned.shape == (y.shape[0], x.shape[1])

    # a spent budget still runs one solve, then skips the rest
    quick = scot.scot_self_tune(x, y, ks=[10, 5], epsilons=[1e-2, 5e-3], time_budget_s=0, max_iter=100)
    assert len(quick.trials) == 1 and len(quick.skipped) == 3
    assert (quick.k, quick.epsilon) == (10, 1e-2)
    # epsilon is the outer loop: the next points in line were k=5 at 1e-2, then 5e-3
    assert quick.skipped[0] == {"k": 5, "epsilon": 1e-2}


def test_default_k_and_grid_follow_scot():
    assert scot.default_k(1874, 1874) == 50
    assert scot.default_k(100, 120) == 20
    ks, es = scot.default_tuning_grid(1874, 1874)
    assert ks == [20, 40, 60, 80, 100] and len(es) == 12
    assert es[0] == pytest.approx(0.1) and es[-1] == pytest.approx(1e-3)


# ----------------------------------------------------------------------------- peers_run.py
def test_peers_run_scot_default_writes_aligned_embeddings(tmp_path):
    inputs, out = tmp_path / "inputs.npz", tmp_path / "result.npz"
    _write_tiny_inputs(inputs)
    # default k and epsilon; fewer outer GW iterations keep the test fast
    _run_cli(sys.executable, "--method", "scot_default", "--inputs", str(inputs), "--out", str(out),
             "--max-iter", "20")
    res, info, error = _read_result(out)
    assert error == "" and info["error"] is None
    assert res["z_rna"].shape == (90, 10) and res["z_atac"].shape == (90, 10)
    assert info["hyperparameters"] == {"k": 18, "epsilon": 1e-3, "max_iter": 20}
    assert info["wall_s"] > 0 and info["peak_rss_mb"] > 0

    scored = peers_run.score(out, inputs)
    assert 0.0 <= scored["foscttm"] <= 1.0 and 0.0 <= scored["label_transfer"] <= 1.0


def test_peers_run_records_a_failing_method_and_exits_zero(tmp_path):
    inputs, out = tmp_path / "inputs.npz", tmp_path / "result.npz"
    _write_tiny_inputs(inputs)
    kept = dict(np.load(inputs))
    del kept["atac_svd"]  # a broken input makes the method raise
    np.savez(inputs, **kept)
    assert peers_run.main(["--method", "scot_default", "--inputs", str(inputs), "--out", str(out)]) == 0
    res, info, error = _read_result(out)
    assert error.startswith("KeyError") and info["error"] == error
    assert "z_rna" not in res.files and "traceback" in info


def _peers_venv_or_skip(package: str) -> Path:
    if not PEERS_PYTHON.exists():
        pytest.skip(f"peers venv absent ({PEERS_PYTHON}); build it from benchmarks/requirements-peers.txt")
    probe = subprocess.run([str(PEERS_PYTHON), "-c", f"import {package}"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"{package} does not import in the peers venv: {probe.stderr.strip()[-300:]}")
    return PEERS_PYTHON


@pytest.mark.parametrize(
    ("method", "extra"),
    [("scotplus", ["--k", "10", "--epsilon", "5e-3"]), ("uniport", ["--uniport-iterations", "20"])],
)
def test_peers_run_package_peers_in_the_peers_venv(tmp_path, method, extra):
    python = _peers_venv_or_skip(method)
    inputs, out = tmp_path / "inputs.npz", tmp_path / "result.npz"
    n_per = 100  # uniPort drops incomplete batches of 256 cells: it needs at least 256 per domain
    _write_tiny_inputs(inputs, n_per=n_per)
    _run_cli(python, "--method", method, "--inputs", str(inputs), "--out", str(out), *extra, timeout=300)
    res, info, error = _read_result(out)
    assert error == "", info.get("traceback", error)
    assert res["z_rna"].shape[0] == 3 * n_per and res["z_atac"].shape[0] == 3 * n_per
    assert res["z_rna"].shape[1] == res["z_atac"].shape[1]
    assert info["package_version"]


# ----------------------------------------------------------------------------- feature domains
def _write_feature_inputs(path: Path, *, n_per: int = 15, seed: int = 0) -> None:
    """Three unpaired feature domains of different sizes (the scNMT layout), 3 labelled blobs each."""
    rng = np.random.default_rng(seed)
    store = {"domains": np.asarray(["rna", "met", "acc"])}
    for i, d in enumerate(store["domains"]):
        x, labels = _clusters(rng, sizes=(n_per + i, n_per + 5, n_per + 10), dim=6)
        store[f"x_{d}"] = x @ np.linalg.qr(rng.normal(size=(6, 6)))[0]
        store[f"cell_ids_{d}"] = np.asarray([f"{d}_{j}" for j in range(x.shape[0])])
        store[f"labels_{d}"] = labels.astype(str)
    np.savez(path, **store)


def test_peers_run_aligns_three_feature_domains_onto_the_anchor(tmp_path):
    inputs, out = tmp_path / "inputs.npz", tmp_path / "result.npz"
    _write_feature_inputs(inputs)
    _run_cli(sys.executable, "--method", "scot_default", "--inputs", str(inputs), "--out", str(out), "--max-iter", "20")
    res, info, error = _read_result(out)
    assert error == "", info.get("traceback")
    feats = peers_run.domain_features(np.load(inputs))
    assert list(feats) == ["rna", "met", "acc"]
    for d, x in feats.items():
        assert res[f"z_{d}"].shape == (x.shape[0], 6)  # the anchor's (rna's) space
    assert set(info["hyperparameters"]) == {"met->rna", "acc->rna"}


@pytest.mark.parametrize("method", ["pamona", "scotplus_tuned"])
def test_peers_run_package_peers_on_feature_domains(tmp_path, method):
    python = _peers_venv_or_skip(method.removesuffix("_tuned"))
    inputs, out = tmp_path / "inputs.npz", tmp_path / "result.npz"
    _write_feature_inputs(inputs)
    _run_cli(python, "--method", method, "--inputs", str(inputs), "--out", str(out), "--max-iter", "20",
             "--nits-uot", "500", "--time-budget", "0", timeout=300)
    res, info, error = _read_result(out)
    assert error == "", info.get("traceback", error)
    dims = {res[f"z_{d}"].shape[1] for d in ("rna", "met", "acc")}
    assert len(dims) == 1
    assert np.isfinite(info["hyperparameters"]["gw_dist"] if method == "pamona"
                       else info["hyperparameters"]["met->rna"]["gw_dist"])


def test_uniport_on_feature_domains_returns_every_domain_in_one_space(tmp_path):
    """The PBMC / scNMT-seq layout: uniPort gets the given features (min-max scaled), the
    anchor as its reference, and returns one latent per domain, rows in input order."""
    python = _peers_venv_or_skip("uniport")
    inputs, out = tmp_path / "inputs.npz", tmp_path / "result.npz"
    _write_feature_inputs(inputs, n_per=90)  # uniPort drops incomplete 256-cell batches
    _run_cli(python, "--method", "uniport", "--inputs", str(inputs), "--out", str(out), "--uniport-iterations", "20",
             timeout=300)
    res, info, error = _read_result(out)
    assert error == "", info.get("traceback", error)
    feats = peers_run.domain_features(np.load(inputs))
    for d, x in feats.items():
        assert res[f"z_{d}"].shape == (x.shape[0], 16)
        assert np.isfinite(res[f"z_{d}"]).all()
    assert info["hyperparameters"]["inputs"].startswith("given features")


def test_budgeted_grid_keeps_the_lowest_gw_and_lists_what_the_budget_left():
    """SCOT's self-tuning rule shared by the tuned peers: failed solves count as inf, the
    lowest GW wins, and past the budget the remaining settings are listed, not run."""
    def solve(k, eps):
        if k == 20:
            raise RuntimeError("did not converge")
        return f"z{k}-{eps}", abs(k - 50) + eps

    best, tried, left = peers_run.budgeted_grid(solve, [20, 50, 100], [1e-2, 1e-3], budget=1e9, errors=(RuntimeError,))
    assert best[:3] == (1e-3, 50, 1e-3) and best[3] == "z50-0.001"
    assert len(tried) == 6 and not left
    assert [t["gw_dist"] for t in tried if t["k"] == 20] == [float("inf")] * 2
    best, tried, left = peers_run.budgeted_grid(solve, [50, 100], [1e-2, 1e-3], budget=0.0)
    assert len(tried) == 1 and best[1] == 50 and [(s["k"], s["epsilon"]) for s in left] == [(100, 1e-2), (50, 1e-3), (100, 1e-3)]
    with pytest.raises(RuntimeError):  # errors not listed propagate
        peers_run.budgeted_grid(solve, [20], [1e-2], budget=1e9)
