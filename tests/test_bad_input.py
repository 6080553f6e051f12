"""The bad-input catalogue (issue 12): each careless input gives a one-line error naming the
file or key and what to do, or a correct result; nothing half-written is left behind.

``CASES`` is the table: a case builds its input under a fresh project folder, runs the
step and must raise with ``message``; none of ``outputs`` may exist afterwards. Recovery
cases (a rerun that must succeed by itself) follow the table.
"""

from __future__ import annotations

import copy
import errno
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from _synthetic import FAST_TRAIN, fast_model, make_domains

from cellbridge import stages
from cellbridge._io import InputError, write_h5ad
from cellbridge.config import validate_config
from cellbridge.training import TrainingDivergedError

torch.set_num_threads(1)

#: a two-domain project small enough to train in a second; paths relative to the project folder
PROJECT = {
    "run": "t",
    "truth": None,
    "domains": {
        "rna": {"modality": "rna", "input": "rna_counts.h5ad", "model": {"hidden_dims": [16]}},
        "image": {"modality": "image", "input": "crops.h5ad", "model": {"hidden_dims": [16], "conv_channels": [4, 8]}},
    },
    "preprocess": {"rna": {"min_genes": 1, "min_cells": 1, "n_top_genes": 10, "min_cells_after_qc": 5}},
    "model": {"latent_dim": 4},
    # the correspondence prior stays on (unsupervised mmd), at the tests' cheap settings
    "alignment": {"methods": ["mmd"], "warmup_epochs": 0, "ramp_epochs": 0,
                  "correspondence": {"k_grid": [10], "epsilon": 0.02, "n_restarts": 1}},
    "training": {"max_epochs": 2, "batch_size": 32, "threads": 1, "checkpoint_every": 1},
}


def project_config(**changes) -> dict:
    """The validated project config with ``changes`` ({"training.lr": 1e30, ...}) applied."""
    cfg = copy.deepcopy(PROJECT)
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        node = cfg
        for part in parents:
            node = node.setdefault(part, {})
        node[key] = value
    return validate_config(cfg)


@pytest.fixture(scope="module")
def synthetic():
    return make_domains(60, image_size=16, seed=0)


@pytest.fixture(scope="module")
def saved_model(synthetic, tmp_path_factory) -> Path:
    model = fast_model(synthetic, alignment="mmd")
    model.train(max_epochs=1, **FAST_TRAIN)
    return model.save(tmp_path_factory.mktemp("saved") / "model")


@pytest.fixture
def project(tmp_path, monkeypatch, synthetic, saved_model) -> Path:
    """A project folder (the working directory) with prepared domains and a saved model."""
    monkeypatch.chdir(tmp_path)
    for name, adata in synthetic.items():
        write_h5ad(adata, tmp_path / "results" / "t" / "prepared" / f"{name}.h5ad")
    shutil.copytree(saved_model, tmp_path / "model")
    return tmp_path


# --------------------------------------------------------------------------- the table
@dataclass
class Case:
    """One catalogue entry: ``run(project)`` must raise with ``message`` and leave no ``outputs``."""

    id: str
    run: Callable[[Path], object]
    message: str
    outputs: tuple[str, ...] = ()
    error: type[Exception] = InputError
    absent: str | None = None  # text the message must not echo


def _translate_query(project: Path) -> None:
    stages.translate_query(project / "model", "rna", "image", "results/t/prepared/rna.h5ad", "query_out.h5ad")


def _damage_model(path: str, content: bytes | Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def run(project: Path) -> None:
        target = project / "model" / path
        target.write_bytes(content(target.read_bytes()) if callable(content) else content)
        _translate_query(project)

    return run


def _mismatched_config(project: Path) -> None:
    meta = json.loads((project / "model" / "config.json").read_text())
    meta["config"]["latent_dim"] = 5
    (project / "model" / "config.json").write_text(json.dumps(meta))
    _translate_query(project)


class _Payload:
    """A pickle that would create a file when loaded: refusing it must not run it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted_pickle(project: Path) -> None:
    torch.save({"weights": _Payload(project / "pwned")}, project / "model" / "model.pt")
    _translate_query(project)


def _too_few_genes(project: Path) -> None:
    rng = np.random.default_rng(0)
    counts = rng.poisson(5.0, size=(80, 8)).astype(np.float32)
    ad.AnnData(counts, var=pd.DataFrame(index=[f"g{i}" for i in range(8)])).write_h5ad(project / "rna_counts.h5ad")
    stages.prepare_domain(project_config(), "rna", output="new_rna.h5ad")


def _disk_full_writing_h5ad(project: Path) -> None:
    def write_part_then_fail(self, path, **kwargs):
        Path(path).write_bytes(b"\x89HDF partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ad.AnnData, "write_h5ad", write_part_then_fail)
        _translate_query(project)


def _disk_full_saving_model(project: Path) -> None:
    # torch says only "unexpected pos" when the disk fills up under torch.save
    def fail(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4480 vs 4366")

    from cellbridge.model import CrossModalModel

    model = CrossModalModel.load(project / "model")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "save", fail)
        mp.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 0))
        model.save(project / "resaved")


def _diverging_lr(project: Path) -> None:
    stages.train(project_config(**{"training.lr": 1e30}), "mmd", 0)


def _missing_translation(project: Path) -> None:
    cfg = project_config()
    model = stages.model_dir(cfg, "mmd", 0)
    shutil.copytree(project / "model", model)
    for d in cfg["domains"]:
        write_h5ad(ad.read_h5ad(f"results/t/prepared/{d}.h5ad"), model / f"{d}.h5ad")
    stages.evaluate(cfg, "mmd", 0)  # nothing translated yet


def _missing_latent(project: Path) -> None:
    stages.evaluate(project_config(), "mmd", 0, output="metrics.json")


def _supervised(relabel: Callable[[dict[str, ad.AnnData]], None]) -> Callable[[Path], object]:
    """Train with label supervision after ``relabel`` changed the synthetic domains' labels."""

    def run(project: Path) -> object:
        doms = {k: v.copy() for k, v in make_domains(60, image_size=16, seed=0).items()}
        relabel(doms)
        for d in doms.values():
            d.obs["cell_type"] = d.obs["cell_type"].astype(object)
        model = fast_model(doms, alignment="mmd", label_key="cell_type")
        return model.train(max_epochs=1, checkpoint_dir=project / "ckpt", **FAST_TRAIN)

    return run


def _unmatched_annotations(doms: dict[str, ad.AnnData]) -> None:
    doms["image"].obs["cell_type"] = None  # annotations joined onto no nucleus


def _single_cell_label(doms: dict[str, ad.AnnData]) -> None:
    obs = doms["image"].obs
    obs["cell_type"] = obs["cell_type"].astype(object)
    obs.iloc[0, obs.columns.get_loc("cell_type")] = "rare"


def _disjoint_labels(doms: dict[str, ad.AnnData]) -> None:
    obs = doms["image"].obs
    obs["cell_type"] = "img_" + obs["cell_type"].astype(str)


#: segmented nuclei as prepare_image gives them to the annotation join
NUCLEI = pd.DataFrame({"source_file": ["f1.tif", "f1.tif", "f2.tif"], "centroid_y": [10.0, 45.0, 20.0],
                       "centroid_x": [60.0, 20.0, 70.0]}, index=["n0", "n1", "n2"])


def _annotate(**columns) -> Callable[[Path], object]:
    """Join an annotation table (the nuclei's positions, then ``columns`` replaced) onto NUCLEI."""

    def run(project: Path) -> object:
        from cellbridge.preprocess.image import annotate_nuclei

        table = NUCLEI.reset_index(drop=True).assign(cell_type=["a", "b", "a"], split=["train", "test", "train"])
        for col, values in columns.items():
            table[col] = values
        table.to_csv(project / "ann.tsv", sep="\t", index=False)
        return annotate_nuclei(NUCLEI, project / "ann.tsv")

    return run


PROSE = "These are my notes about the experiment, not a table"


def _prose_as(key: str) -> Callable[[Path], object]:
    def run(project: Path) -> object:
        (project / "notes.txt").write_text(PROSE + "\nsecond line\n")
        cfg = project_config(**{key: "notes.txt"})
        return stages.training._anchors(cfg)  # the truth table is already checked by project_config

    return run


def _counts_file(name: str, text: str) -> Callable[[Path], object]:
    def run(project: Path) -> object:
        from cellbridge.preprocess.counts import read_counts

        (project / name).write_text(text)
        return read_counts(project / name)

    return run


def _genes_by_cells() -> str:
    """A CSV of 30 genes (rows) x 12 cells (columns), as many pipelines write counts."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.poisson(3, (30, 12)), index=[f"Gene{i:04d}" for i in range(1, 31)],
                         columns=[f"cell_{j}" for j in range(12)])
    return table.to_csv()


def _query_missing_genes(project: Path) -> None:
    rna = ad.read_h5ad("results/t/prepared/rna.h5ad")
    write_h5ad(rna[:, 5:].copy(), project / "query.h5ad")
    stages.translate_query(project / "model", "rna", "image", project / "query.h5ad", "query_out.h5ad")


def _tiff(shape: tuple[int, ...], channel: int | None, **write) -> Callable[[Path], object]:
    """A TIFF written without axis metadata, as numpy users write them, read as a field."""

    def run(project: Path) -> object:
        import tifffile

        from cellbridge.preprocess.image import read_field

        rng = np.random.default_rng(0)
        tifffile.imwrite(project / "field.tif", rng.integers(0, 1000, shape).astype(np.uint16), **write)
        return read_field(project / "field.tif", channel=channel)

    return run


def _nan_patch(project: Path) -> object:
    import tifffile

    from cellbridge.preprocess.image import read_field

    field = np.full((64, 64), 0.1, dtype=np.float32)
    field[20:30, 20:30] = np.nan
    tifffile.imwrite(project / "field.tif", field)
    return read_field(project / "field.tif")


def _config(**changes) -> Callable[[Path], object]:
    return lambda project: project_config(**changes)


def _domains(*names: str) -> Callable[[Path], object]:
    def run(project: Path) -> object:
        cfg = copy.deepcopy(PROJECT)
        cfg["domains"] = {n: {"modality": "rna", "input": f"{n}.h5ad"} for n in names}
        return validate_config(cfg)

    return run


CASES = [
    # 4. data loss: two translations into one file
    Case("domains x and x_to_x", _domains("x", "x_to_x"), r"x -> x_to_x and x_to_x -> x would both be written to x_to_x_to_x\.h5ad"),
    Case("domains a_/to_b and a__to/b", _domains("a_", "to_b", "a__to", "b"), r"would both be written to a__to_to_b\.h5ad"),
    Case("domains differing by case", _domains("rna", "RNA"), r"'rna' and 'RNA' differ only by case"),
    Case("domain name with a dot", _domains("rna", "im.v2"), r"domains: 'im\.v2' does not match"),
    # 5. path escape
    Case("run ..", _config(run=".."), r"run: '\.\.' is not a folder name"),
    Case("run .", _config(run="."), r"run: '\.' is not a folder name"),
    # 6. crashes instead of errors
    Case("too few genes for HVG selection", _too_few_genes, r"rna_counts\.h5ad: only 8 gene\(s\) are detected .* at least 20",
         outputs=("new_rna.h5ad",)),
    Case("truncated model.pt", _damage_model("model.pt", lambda b: b[: len(b) // 2]),
         r"model/model\.pt: model weights file is truncated or not a PyTorch file", outputs=("query_out.h5ad",)),
    Case("empty model.pt", _damage_model("model.pt", b""), r"model/model\.pt: model weights file is empty",
         outputs=("query_out.h5ad",)),
    Case("invalid config.json", _damage_model("config.json", b"{not json"),
         r"model/config\.json: is not a valid cellbridge model configuration", outputs=("query_out.h5ad",)),
    Case("config.json without config", _damage_model("config.json", b'{"cellbridge_version": "0"}'),
         r"model/config\.json: is not a valid cellbridge model configuration \(no key 'config'\)", outputs=("query_out.h5ad",)),
    Case("config.json of another model", _mismatched_config, r"model: model\.pt does not fit the architecture in config\.json",
         outputs=("query_out.h5ad",)),
    Case("crafted pickle", _crafted_pickle, r"model\.pt: model weights file holds objects other than tensors .*refused",
         outputs=("query_out.h5ad", "pwned")),
    Case("disk full writing a translation", _disk_full_writing_h5ad, r"query_out\.h5ad: no space left on the device",
         outputs=("query_out.h5ad",)),
    Case("disk full saving a model", _disk_full_saving_model, r"resaved/model\.pt: no space left on the device",
         outputs=("resaved/model.pt", "resaved/config.json")),
    Case("lr 1e30", _diverging_lr, r"training diverged: loss term '\w+' is (nan|inf) at epoch 1",
         outputs=("results/t/models/mmd/seed0/model.pt",), error=TrainingDivergedError),
    Case("missing translated file", _missing_translation, r"translation rna -> rna does not exist",
         outputs=("results/t/metrics/mmd/seed0.json",)),
    Case("missing latent file", _missing_latent, r"results/t/models/mmd/seed0/rna\.h5ad: latent of 'rna' does not exist",
         outputs=("metrics.json",)),
    # 3. silent wrong results
    Case("image split Train/Test", _annotate(split=["Train", "Test", "validation"]),
         r"ann\.tsv: annotation column 'split' must hold only 'train' or 'test' \(found \['Test', 'Train', 'validation'\]\)"),
    Case("annotations of other files", _annotate(source_file=["plate1.tif"] * 3),
         r"ann\.tsv: no annotation lies within 5 px of any of the 3 nuclei; check that source_file .*plate1\.tif"),
    Case("annotations with x and y swapped", _annotate(centroid_y=[60.0, 20.0, 70.0], centroid_x=[10.0, 45.0, 20.0]),
         r"ann\.tsv: no annotation lies within 5 px .*centroid_y/centroid_x are not swapped"),
    Case("non-numeric centroid", _annotate(centroid_x=["60", "30px", "70"]),
         r"ann\.tsv: annotation column 'centroid_x' must hold pixel coordinates; row 2 holds '30px'"),
    Case("(3, H, W) TIFF: channels or planes", _tiff((3, 32, 32), None, photometric="rgb", planarconfig="separate"),
         r"field\.tif: image has 3 different channels; set `channel` to the nuclear stain"),
    Case("(2, H, W) TIFF: channels or planes", _tiff((2, 32, 32), None),
         r"field\.tif: an unnamed axis of this \(2, 32, 32\) image may hold channels or z-planes"),
    Case("(3, 2, H, W) TIFF with channel 0", _tiff((3, 2, 32, 32), 0),
         r"field\.tif: channel 0 requested, but no axis of this \(3, 2, 32, 32\) image is known to hold channels"),
    Case("genes x cells without transpose", _counts_file("counts.csv", _genes_by_cells()),
         r"counts\.csv: rows look like features and columns like cells \(rows: 'Gene0001'.*set transpose: true"),
    # 7. unclear errors
    Case("header-only CSV", _counts_file("counts.csv", "cell," + ",".join(f"g{i}" for i in range(400)) + "\n"),
         r"counts\.csv: has a header row but no data rows; expected one row per cell"),
    Case("count file of unknown format", _counts_file("counts.dat", "1 2 3\n"),
         r"counts\.dat: cannot tell the count-matrix format .*rename the file", absent="pass format explicitly"),
    Case("query with missing genes", _query_missing_genes,
         r"query\.h5ad: as 'rna' cells for this model: .*5 feature\(s\) the model was trained on are missing",
         outputs=("query_out.h5ad",), absent="synthetic:rna"),
    Case("truth that is no table", _prose_as("truth"),
         r"notes\.txt: truth table has no 'cell_id' column \(a single column: not tab-separated\?\)", absent=PROSE),
    Case("anchors that are no table", _prose_as("alignment.anchors.table"),
         r"notes\.txt: an anchor table needs a header naming at least two domains \(rna, image\); its header names 0", absent=PROSE),
    Case("float TIFF with a NaN patch", _nan_patch, r"field\.tif: 100 of 4096 pixels are NaN or infinite"),
    # 3. labels that match no cell: training would go ahead supervised by nothing
    Case("annotations match no nucleus", _supervised(_unmatched_annotations),
         r"domain 'image': none of its 60 training cells has a label in obs\['cell_type'\]", outputs=("ckpt",)),
    Case("a label with one cell", _supervised(_single_cell_label),
         r"domain 'image': label\(s\) with fewer than 2 labelled training cells in obs\['cell_type'\]: rare \(1\)",
         outputs=("ckpt",)),
    Case("disjoint label sets", _supervised(_disjoint_labels),
         r"domain 'rna': shares no label in obs\['cell_type'\] with the other domains", outputs=("ckpt",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_clear_line_and_no_output(case: Case, project: Path):
    with pytest.raises(case.error) as err:
        case.run(project)
    message = str(err.value)
    assert re.search(case.message, message), message
    assert "\n" not in message and "weights_only" not in message
    assert case.absent is None or case.absent not in message
    for out in case.outputs:
        assert not (project / out).exists(), f"{out} was written"
    leftovers = [p for p in project.rglob(".*") if p.is_file() and not p.name.startswith(".nfs")]
    assert not leftovers, f"temporary files left: {leftovers}"


# --------------------------------------------------------------------------- one line at the surface
def test_cli_reports_a_diverged_training_in_one_line(project, capsys):
    from cellbridge.cli import main

    cfg = copy.deepcopy(PROJECT)
    cfg["training"]["lr"] = 1e30
    (project / "c.yaml").write_text(json.dumps(cfg))
    assert main(["train", "-c", "c.yaml", "-m", "mmd", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cellbridge train: error: training diverged") and "\n" not in err
    assert not (project / "results" / "t" / "models").exists()


def test_workflow_step_reports_an_expected_error_in_one_line(tmp_path, capsys):
    from cellbridge._logging import log_to_file

    log = tmp_path / "step.log"
    with pytest.raises(SystemExit) as stop, log_to_file(log):
        raise TrainingDivergedError("align", float("nan"), 3, None)
    assert stop.value.code == 1
    assert "Traceback" not in log.read_text() and "training diverged" in log.read_text()
    assert capsys.readouterr().err.strip().startswith("error: training diverged")
    with pytest.raises(ZeroDivisionError), log_to_file(log):  # a bug keeps its traceback
        1 / 0
    assert "Traceback" in log.read_text()


# --------------------------------------------------------------------------- recovery
def _empty(ckpt: Path) -> None:
    ckpt.write_bytes(b"")


def _truncated(ckpt: Path) -> None:
    ckpt.write_bytes(ckpt.read_bytes()[:100])


def _pickle(ckpt: Path) -> None:
    torch.save({"state": _Payload(ckpt.parent / "pwned")}, ckpt)


@pytest.mark.parametrize(
    "damage,first,aside",
    [
        (_empty, {}, "damaged"),
        (_truncated, {}, "damaged"),
        (_pickle, {}, "damaged"),
        (None, {"alignment": "wasserstein"}, "stale"),  # written under another configuration
        (None, {"max_epochs": 3}, "stale"),  # already past max_epochs: cannot be undone
    ],
    ids=["empty", "truncated", "crafted pickle", "other configuration", "beyond max_epochs"],
)
def test_an_unusable_checkpoint_is_set_aside_and_training_restarts(synthetic, tmp_path, caplog, damage, first, aside):
    ckpt_dir = tmp_path / "ckpt"
    first_model = fast_model(synthetic, alignment=first.get("alignment", "mmd"))
    first_model.train(max_epochs=first.get("max_epochs", 1), checkpoint_dir=ckpt_dir, checkpoint_every=1, **FAST_TRAIN)
    if damage is not None:
        damage(ckpt_dir / "checkpoint.pt")
    model = fast_model(synthetic, alignment="mmd")
    with caplog.at_level(logging.WARNING, logger="cellbridge"):
        history = model.train(max_epochs=2, checkpoint_dir=ckpt_dir, checkpoint_every=1, **FAST_TRAIN)
    assert list(history.index) == [1, 2]  # restarted, not resumed
    assert f"set aside as checkpoint.{aside}.pt" in caplog.text
    assert (ckpt_dir / f"checkpoint.{aside}.pt").exists() and not (ckpt_dir / "pwned").exists()
    assert torch.load(ckpt_dir / "checkpoint.pt", weights_only=True)["epoch"] == 2


def test_fresh_training_ignores_a_good_checkpoint(project, caplog):
    from cellbridge.cli import build_parser

    assert build_parser().parse_args(["train", "-m", "mmd", "--fresh"]).fresh
    cfg = project_config()
    stages.train(cfg, "mmd", 0)
    with caplog.at_level(logging.INFO, logger="cellbridge"):
        model = stages.train(cfg, "mmd", 0, fresh=True)
    assert "resuming" not in caplog.text and list(model.history.index) == [1, 2]
    # the latents carry how closely they keep the prior's pairs (the model's config has it too)
    latent = ad.read_h5ad(stages.model_dir(cfg, "mmd", 0) / "rna.h5ad")
    assert dict(latent.uns["cellbridge"]["latent_pull"]) == pytest.approx(model.config["correspondence"]["latent_pull"])


def test_partly_labelled_domains_train_with_a_warning_giving_the_counts(synthetic, caplog):
    doms = {k: v.copy() for k, v in synthetic.items()}
    obs = doms["image"].obs
    obs["cell_type"] = obs["cell_type"].astype(object)
    obs.iloc[:15, obs.columns.get_loc("cell_type")] = None
    model = fast_model(doms, alignment="mmd", label_key="cell_type")
    with caplog.at_level(logging.WARNING, logger="cellbridge"):
        model.train(max_epochs=1, **FAST_TRAIN)
    assert "domain 'image': 15 of 60 training cells have no label in obs['cell_type']" in caplog.text


def test_a_field_named_like_a_glob_pattern_is_read_literally(tmp_path):
    from cellbridge.preprocess.image import find_image_files

    field = tmp_path / "plate[1].tif"
    field.write_bytes(b"")
    (tmp_path / "plate1.tif").write_bytes(b"")  # what the pattern plate[1].tif would match
    assert find_image_files(field) == [field]


def test_a_learning_rate_that_explodes_without_nan_is_warned_about(synthetic, caplog):
    with caplog.at_level(logging.WARNING, logger="cellbridge"):
        fast_model(synthetic, alignment="mmd").train(max_epochs=2, lr=1000, **FAST_TRAIN)
    assert "training is diverging; lower the learning rate (lr=1000)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cellbridge"):
        fast_model(synthetic, alignment="mmd").train(max_epochs=2, **FAST_TRAIN)
    assert "diverging" not in caplog.text


def test_a_genes_x_cells_file_reads_correctly_with_transpose(tmp_path):
    from cellbridge.preprocess.counts import read_counts

    (tmp_path / "counts.csv").write_text(_genes_by_cells())
    adata = read_counts(tmp_path / "counts.csv", transpose=True)
    assert adata.shape == (12, 30) and adata.obs_names[0] == "cell_0"


@pytest.fixture
def full_disk(tmp_path):
    """A 16 KiB file system (root only: a tmpfs mount), to fill for real."""
    mount = tmp_path / "full"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    import subprocess

    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_during_translation_is_one_line_not_a_segfault(project, full_disk):
    """HDF5's exit handler crashes after a failed write: the CLI must end before it runs."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "cellbridge.cli", "translate", "--model", "model", "--source", "rna",
           "--target", "image", "--input", "results/t/prepared/rna.h5ad", "--output", str(full_disk / "out.h5ad")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 2, proc.stderr[-2000:]  # 139 is the segfault
    assert "Traceback" not in proc.stderr  # nor h5py's clean-up errors around the message
    assert proc.stderr.strip().splitlines()[-1] == (
        f"cellbridge translate: error: {full_disk / 'out.h5ad'}: no space left on the device while writing it; "
        "free some space and rerun"
    )
    assert os.listdir(full_disk) == []
