"""Training loop: losses fall, alignment works, checkpoints resume exactly, divergence is caught."""

import numpy as np
import pandas as pd
import pytest
import torch
from _synthetic import FAST_TRAIN, fast_model, make_domains

from cellbridge.align import mmd
from cellbridge.plotting import plot_history
from cellbridge.sampling import BalancedSampler, LabelMatchedSampler, split_validation
from cellbridge.training import COST_COLUMNS, Trainer, TrainingDivergedError, TrainingPlan

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def domains():
    return make_domains(160, image_size=16, seed=0)


def _train(domains, alignment, epochs, **kw):
    model = fast_model(domains, alignment=alignment, **kw.pop("model", {}))
    history = model.train(max_epochs=epochs, **{**FAST_TRAIN, **kw})
    return model, history


def _latent_mmd(model):
    z = [torch.as_tensor(model.get_latent(d)) for d in ("rna", "image")]
    return float(mmd(*z))


@pytest.mark.parametrize("alignment", ["wasserstein", "mmd", "adversarial"])
def test_alignment_and_reconstruction_fall(domains, alignment):
    model, history = _train(domains, alignment, 8, lr=3e-3)
    assert len(history) == 8 and np.isfinite(history.drop(columns=list(COST_COLUMNS)).to_numpy()).all()
    for dom in ("rna", "image"):
        assert history[f"recon_{dom}"].iloc[-1] < 0.7 * history[f"recon_{dom}"].iloc[0]
    if alignment == "adversarial":
        # encoders fool the discriminator: its accuracy drops towards chance once they adapt
        assert history["discriminator_acc"].iloc[-2:].mean() < history["discriminator_acc"].max()
        assert history["align"].iloc[-2:].mean() < history["align"].max()
    else:
        assert history["align"].iloc[-2:].mean() < 0.7 * history["align"].iloc[:2].mean()


def test_none_leaves_domains_unaligned(domains):
    aligned, _ = _train(domains, "wasserstein", 8, lr=3e-3, align_weight=5.0)
    unaligned, history = _train(domains, "none", 8, lr=3e-3, align_weight=5.0)
    assert (history["align"] == 0).all()
    assert _latent_mmd(unaligned) > 3 * _latent_mmd(aligned)


def test_warmup_and_ramp_schedule():
    plan = TrainingPlan(warmup_epochs=2, ramp_epochs=4)
    assert [plan.schedule(e) for e in range(1, 8)] == [0, 0, 0.25, 0.5, 0.75, 1, 1]
    assert plan.full_weight_epoch() == 6
    constant = TrainingPlan(warmup_epochs=2, align_schedule="constant")
    assert [constant.schedule(e) for e in (2, 3)] == [0, 1]
    with pytest.raises(ValueError, match="align_schedule"):
        TrainingPlan(align_schedule="cosine")


def test_schedule_counts_steps_when_an_epoch_is_long():
    from cellbridge.training import SCHEDULE_EPOCH_STEPS as S

    plan = TrainingPlan(warmup_epochs=2, ramp_epochs=4)
    # short epochs: the data's epoch, whatever the step
    assert plan.schedule_epoch(3, S - 1, S) == 3 and plan.full_weight_epoch(S) == 6
    # an epoch of 2.5 schedule epochs: the weight leaves 0 half-way through the data's first epoch
    steps = int(2.5 * S)
    weights = [plan.schedule(plan.schedule_epoch(1, s, steps)) for s in range(steps)]
    assert weights[2 * S - 1] == 0 and weights[2 * S] == 0.25
    assert plan.schedule(plan.schedule_epoch(3, 0, steps)) == 1.0  # step 5S: schedule epoch 6
    assert plan.full_weight_epoch(steps) == 3  # schedule epoch 6 starts at step 5S, in data epoch 3
    assert plan.full_weight_epoch(10 * S) == 1


def test_long_epochs_turn_alignment_on_within_the_epoch(domains, monkeypatch):
    # 160 cells, 90% trained, batches of 16: 9 steps per epoch, counted as 3 schedule epochs of 3 steps
    monkeypatch.setattr("cellbridge.training.SCHEDULE_EPOCH_STEPS", 3)
    _, history = _train(domains, "wasserstein", 2, batch_size=16, warmup_epochs=1, ramp_epochs=2)
    # epoch 1: 3 steps at 0, 3 at 0.5, 3 at 1; epoch 2: all at 1
    assert history["schedule"].tolist() == pytest.approx([0.5, 1.0])
    _, per_epoch = _train(domains, "wasserstein", 2, batch_size=64, warmup_epochs=1, ramp_epochs=2)
    assert per_epoch["schedule"].tolist() == [0.0, 0.5]  # 3 steps per epoch: the data's epochs


def test_warmup_skips_the_alignment_term_but_validation_measures_it(domains, tmp_path):
    _, history = _train(domains, "wasserstein", 3, warmup_epochs=2, ramp_epochs=1)
    assert history["align"].isna().tolist() == [True, True, False]
    assert np.isfinite(history["val_align"]).all() and history["schedule"].tolist() == [0, 0, 1]
    png = plot_history(history, tmp_path / "curves.png")
    assert png.stat().st_size > 10_000


def test_a_sampler_factory_replaces_the_default(domains):
    from cellbridge.sampling import default_sampler

    built = []

    def two_steps(trainer):
        sampler = default_sampler(trainer)
        sampler.steps_per_epoch = 2
        built.append(sampler)
        return sampler

    _, history = _train(domains, "wasserstein", 2, sampler=two_steps)
    assert len(built) == 1 and type(built[0]).__name__ == "CorrespondenceSampler"  # unsupervised: the prior's
    full = _train(domains, "wasserstein", 1)[1]
    # 2 steps of 32 cells per domain, against 5 in a full epoch of 144 cells
    assert history["cells_per_s"].iloc[0] * history["seconds"].iloc[0] == pytest.approx(2 * 2 * 32)
    assert full["cells_per_s"].iloc[0] * full["seconds"].iloc[0] == pytest.approx(5 * 2 * 32)
    assert (history["validation_seconds"] > 0).all() and (history["validation_seconds"] < history["seconds"]).all()


def test_three_domains_train():
    doms = make_domains(90, modalities=("rna", "image", "atac"), image_size=16, seed=1)
    model, history = _train(doms, "mmd", 3, model={"label_key": "cell_type", "variational": True})
    for dom in ("rna", "image", "atac"):
        assert f"recon_{dom}" in history and f"kl_{dom}" in history
        assert model.get_latent(dom).shape == (90, 4)
    assert history["label_acc"].between(0, 1).all()
    atac = model.translate("rna", "atac")
    assert atac.shape == (90, 80) and "probability" in atac.layers


def test_balanced_sampler_covers_largest_domain():
    cells = {"a": np.arange(100), "b": np.arange(30)}
    sampler = BalancedSampler(cells, 32, np.random.default_rng(0))
    batches = list(sampler.epoch())
    assert len(batches) == sampler.steps_per_epoch == 4
    assert set(np.concatenate([b["a"] for b in batches])) == set(range(100))
    assert all(len(b["b"]) == 30 and len(set(b["b"])) == 30 for b in batches)


def test_label_matched_sampler_copies_label_counts():
    rng = np.random.default_rng(0)
    labels = {"a": rng.integers(-1, 3, 200), "b": np.r_[rng.integers(0, 3, 60), np.full(10, 7)]}
    cells = {"a": np.arange(200), "b": np.arange(70)}
    sampler = LabelMatchedSampler(cells, labels, 32, np.random.default_rng(1))
    batches = list(sampler.epoch())
    assert len(batches) == 7
    assert set(np.concatenate([b["a"] for b in batches])) == set(range(200))  # the first domain is covered as usual
    for b in batches:
        want, got = labels["a"][b["a"]], labels["b"][b["b"]]
        assert len(got) == len(want)
        for lab in (0, 1, 2):  # known labels are matched exactly, even where domain b lacks the cells (70 < 200)
            assert (got == lab).sum() >= (want == lab).sum()
        assert (got == 7).sum() <= (want == -1).sum()  # b's own extra label only fills unknown slots
    # the same counts through the trainer, only when asked for and when every domain has labels
    doms = make_domains(120, image_size=16, seed=2)
    model = fast_model(doms, alignment="wasserstein", label_key="cell_type")
    plan = TrainingPlan(batch_size=16, match_label_batches=True)
    trainer = Trainer(model.module, model.data, plan, device=torch.device("cpu"), progress=False)
    assert isinstance(trainer.sampler, LabelMatchedSampler)
    step = next(trainer.sampler.epoch())
    codes = {d: model.data[d].labels[step[d]] for d in ("rna", "image")}
    assert sorted(codes["rna"].tolist()) == sorted(codes["image"].tolist())
    unmatched = TrainingPlan(match_label_batches=False)
    assert type(Trainer(model.module, model.data, unmatched, device=torch.device("cpu")).sampler) is BalancedSampler
    unlabelled = fast_model(doms, alignment="wasserstein")
    assert type(Trainer(unlabelled.module, unlabelled.data, plan, device=torch.device("cpu")).sampler) is BalancedSampler


def test_validation_split_is_seeded():
    a = split_validation(np.arange(50), 0.2, np.random.default_rng(0))
    b = split_validation(np.arange(50), 0.2, np.random.default_rng(0))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert len(a[1]) == 10 and not set(a[0]) & set(a[1])


def test_test_cells_are_held_out():
    doms = make_domains(100, image_size=16, test_fraction=0.3, seed=2)
    model = fast_model(doms, alignment="none")
    seen = {}

    # the sampler only ever hands out training cells: check through the trainer's split
    from cellbridge.training import Trainer

    trainer = Trainer(model.module, model.data, TrainingPlan(max_epochs=1), device=model.device, progress=False)
    for name, adata in doms.items():
        test = np.flatnonzero(adata.obs["split"].to_numpy() == "test")
        seen[name] = np.concatenate([trainer.train_cells[name], trainer.val_cells[name]])
        assert not set(test) & set(seen[name])
        assert len(seen[name]) == adata.n_obs - len(test)


def _history_without_time(history):
    return history.drop(columns=list(COST_COLUMNS))


def test_resume_reproduces_uninterrupted_run(domains, tmp_path):
    kw = dict(max_epochs=6, checkpoint_every=2, lr=3e-3, match_label_batches=True, label_smoothing=0.5, **FAST_TRAIN)
    full = fast_model(domains, alignment="adversarial", label_key="cell_type")
    expected = full.train(checkpoint_dir=tmp_path / "full", **kw)

    class Interrupt(Exception):
        pass

    def stop_after_4(epoch, row):
        if epoch == 4:
            raise Interrupt

    first = fast_model(domains, alignment="adversarial", label_key="cell_type")
    with pytest.raises(Interrupt):
        first.train(checkpoint_dir=tmp_path / "run", callbacks=[stop_after_4], **kw)
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["epoch"] == 4
    resumed = fast_model(domains, alignment="adversarial", label_key="cell_type")
    epochs_run = []
    history = resumed.train(checkpoint_dir=tmp_path / "run", callbacks=[lambda e, r: epochs_run.append(e)], **kw)
    assert epochs_run == [5, 6]  # no lost work, nothing redone
    pd.testing.assert_frame_equal(_history_without_time(history), _history_without_time(expected))
    np.testing.assert_array_equal(resumed.get_latent("image"), full.get_latent("image"))
    # a finished run is not retrained
    again = fast_model(domains, alignment="adversarial", label_key="cell_type")
    pd.testing.assert_frame_equal(_history_without_time(again.train(checkpoint_dir=tmp_path / "run", **kw)), _history_without_time(expected))
    # a checkpoint from another configuration is set aside (tests/test_bad_input.py): training restarts
    other = fast_model(domains, alignment="mmd", label_key="cell_type")
    assert list(other.train(checkpoint_dir=tmp_path / "run", **{**kw, "max_epochs": 1}).index) == [1]
    assert (tmp_path / "run" / "checkpoint.stale.pt").exists()


def test_nan_loss_names_term_and_keeps_checkpoint(domains, tmp_path):
    model = fast_model(domains, alignment="mmd")

    def poison(epoch, row):
        if epoch == 2:
            with torch.no_grad():
                next(model.module.autoencoders["rna"].decoder.parameters()).fill_(float("nan"))

    with pytest.raises(TrainingDivergedError, match=r"recon_rna.*epoch 3.*checkpoint\.pt") as err:
        model.train(max_epochs=6, checkpoint_dir=tmp_path, checkpoint_every=1, callbacks=[poison], **FAST_TRAIN)
    assert err.value.term == "recon_rna" and err.value.epoch == 3
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in state["module"].values() if v.is_floating_point())


def test_early_stopping_stops_and_restores_best(domains):
    # min_delta so large that no epoch counts as an improvement after the first monitored one
    model, history = _train(domains, "mmd", 20, early_stopping_patience=2, min_delta=1e9)
    assert len(history) == 3  # epoch 1 sets the best, 2 and 3 exhaust the patience
    assert "val_loss" in history and "val_recon_rna" in history


def test_seed_repeatability(domains):
    a, ha = _train(domains, "wasserstein", 2, model={"seed": 3})
    b, hb = _train(domains, "wasserstein", 2, model={"seed": 3})
    c, _ = _train(domains, "wasserstein", 2, model={"seed": 4})
    pd.testing.assert_frame_equal(_history_without_time(ha), _history_without_time(hb))
    np.testing.assert_array_equal(a.get_latent("rna"), b.get_latent("rna"))
    assert not np.allclose(a.get_latent("rna"), c.get_latent("rna"))


def test_nb_likelihood_and_plot(domains, tmp_path):
    model, history = _train(domains, "mmd", 3, model={"domain_kwargs": {"rna": {"likelihood": "nb"}}})
    assert history["recon_rna"].iloc[-1] < history["recon_rna"].iloc[0]
    out = plot_history(history, tmp_path / "plots" / "loss.png")
    assert out.exists() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_auto_batch_size_keeps_128_until_an_epoch_exceeds_2048_steps():
    from cellbridge.training import MAX_STEPS_PER_EPOCH, auto_batch_size, scaled_lr

    assert auto_batch_size(100) == 128
    assert auto_batch_size(128 * MAX_STEPS_PER_EPOCH) == 128
    assert auto_batch_size(128 * MAX_STEPS_PER_EPOCH + 1) == 256
    # a million cells: 720,000 training cells -> 512 (1,407 steps per epoch)
    assert auto_batch_size(720_000) == 512
    assert auto_batch_size(10**9) == 1024
    assert scaled_lr(0.002, 128) == 0.002
    assert scaled_lr(0.002, 512) == pytest.approx(0.004)


def test_history_reports_speed_and_memory_and_auto_batch(domains):
    model, history = _train(domains, "mmd", 2, batch_size="auto")
    assert list(history.columns[-len(COST_COLUMNS):]) == list(COST_COLUMNS)
    assert (history["cells_per_s"] > 0).all() and (history["peak_memory_mb"] > 50).all()
    assert model.training_settings["batch_size"] == 128 and model.training_settings["rule"] == "auto"
    with pytest.raises(ValueError, match="batch_size"):
        model.train(max_epochs=1, batch_size="big")


def test_job_log_shows_progress_speed_memory_and_eta(domains, caplog, monkeypatch):
    import logging

    from cellbridge import training

    monkeypatch.setattr(training, "STEP_BAR_MIN_STEPS", 1)
    monkeypatch.setattr(training, "PROGRESS_LOG_SECONDS", 0.0)
    with caplog.at_level(logging.INFO, logger="cellbridge"):
        _train(domains, "mmd", 2)
    lines = [r.getMessage() for r in caplog.records]
    within = [m for m in lines if m.startswith("epoch 1/2: ") and "% of " in m]
    assert within and "cells/s" in within[0] and "left in this epoch" in within[0] and "MiB" in within[0]
    summary = [m for m in lines if m.startswith("epoch 2/2: loss")]
    assert summary and "cells/s, peak memory" in summary[0] and "left for the run" in summary[0]
