"""benchmarks/alignment_demo.py: the per-seed summary and the latent-size sweep's run folders."""

from __future__ import annotations

import pandas as pd
import pytest

from _bench import load_benchmark

demo = load_benchmark("alignment_demo")


def test_summary_is_per_method_and_latent_size():
    table = pd.DataFrame(
        {
            "setting": ["labels"] * 6,
            "method": ["mmd"] * 4 + ["none"] * 2,
            "latent": [8, 8, 16, 16, 8, 8],
            "seed": [0, 1, 0, 1, 0, 1],
            "FOSCTTM": [0.08, 0.10, 0.10, 0.14, 0.4, 0.5],
        }
    )
    out = demo.summarise(table).set_index(["method", "latent"]).drop(columns="setting")
    assert list(out.index) == [("mmd", 8), ("mmd", 16), ("none", 8)]
    assert out.loc[("mmd", 8), "seeds"] == 2
    assert out.loc[("mmd", 8), "FOSCTTM mean"] == pytest.approx(0.09)
    assert out.loc[("mmd", 16), "FOSCTTM max"] == 0.14
    assert out.loc[("none", 8), "FOSCTTM min"] == 0.4


def test_latent_size_copy_shares_the_prepared_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for sub in ("simulated", "prepared"):
        (tmp_path / "results" / "bench" / sub).mkdir(parents=True)
    (tmp_path / "results" / "bench" / "prepared" / "rna.h5ad").write_text("x")
    config = {"run": "bench", "model": {"latent_dim": 16}}

    small = demo.at_latent_size(config, 8)
    again = demo.at_latent_size(config, 8)  # a second call reuses the links

    assert small == again
    assert small["run"] == "bench_latent8" and small["model"]["latent_dim"] == 8
    assert config == {"run": "bench", "model": {"latent_dim": 16}}  # the caller's config is untouched
    assert (tmp_path / "results" / "bench_latent8" / "prepared" / "rna.h5ad").read_text() == "x"


def test_unsupervised_setting_drops_every_label_use(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for sub in ("simulated", "prepared"):
        (tmp_path / "results" / "bench" / sub).mkdir(parents=True)
    config = {
        "run": "bench",
        "alignment": {"labels": {"use": True}, "adversarial": {"conditional": True}},
    }
    plain = demo.in_setting(config, "unsupervised")
    assert plain["alignment"]["labels"]["use"] is False and plain["alignment"]["adversarial"]["conditional"] is False
    assert demo.setting_of(plain) == "unsupervised" and demo.setting_of(config) == "labels"
    assert (tmp_path / "results" / "bench_unsupervised" / "prepared").is_symlink()
    assert demo.in_setting(config, "labels") == config
    with pytest.raises(ValueError, match="setting"):
        demo.in_setting(config, "anchors")


def test_update_merges_into_the_existing_table(tmp_path):
    """--update keeps the other setting's rows and replaces only the same setting, method, latent and seed."""
    path = tmp_path / "alignment_demo.tsv"

    def row(setting, method, seed, foscttm):
        return {"setting": setting, "method": method, "latent": 8, "seed": seed, "FOSCTTM": foscttm}

    pd.DataFrame([row("labels", "mmd", 0, 0.09), row("labels", "mmd", 1, 0.10)]).to_csv(path, sep="\t", index=False)
    new = pd.DataFrame([row("unsupervised", "mmd", 0, 0.42), row("labels", "mmd", 1, 0.11)])

    merged = demo.merge_rows(path, new)

    assert merged[["setting", "seed", "FOSCTTM"]].values.tolist() == [
        ["labels", 0, 0.09],
        ["labels", 1, 0.11],
        ["unsupervised", 0, 0.42],
    ]
    assert demo.merge_rows(tmp_path / "absent.tsv", new).equals(new)
