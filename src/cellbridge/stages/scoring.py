"""The evaluate, plot_shift, plot_latents and compare stages: metrics, figures and comparison tables."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .._io import InputError, read_h5ad
from ..contract import LATENT_KEY
from ..modalities import get_modality
from .paths import PathLike, metrics_path, model_dir, results_dir, translated_path
from .preparation import read_prepared
from .translation import _truth_or_none

logger = logging.getLogger("cellbridge")


# --------------------------------------------------------------------------- evaluation
def vector_pairs(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Cross-domain (source, target) pairs with a vector target."""
    doms = config["domains"]
    return [(s, t) for s in doms for t in doms if s != t and doms[t]["modality"] != "image"]


def scatter_pairs(config: dict[str, Any]) -> list[tuple[str, str]]:
    """The pairs ``evaluate`` draws a predicted-against-measured scatter for: vector targets, when truth exists."""
    return vector_pairs(config) if config.get("truth") else []


def evaluate(
    config: dict[str, Any],
    method: str,
    seed: int,
    *,
    latents: dict[str, PathLike] | None = None,
    translated: dict[tuple[str, str], PathLike] | None = None,
    prepared: dict[str, PathLike] | None = None,
    output: PathLike | None = None,
    scatters: dict[tuple[str, str], PathLike] | None = None,
) -> dict[str, Any]:
    """Score one model on held-out cells; write ``metrics/{method}/seed{seed}.json`` and plots.

    Translations are opened backed: of their ``X`` only the rows scored are read (at most
    ``evaluation.max_cells`` pairs), so a translation of a million cells is never loaded whole.
    """
    from .._io import write_json
    from ..evaluate import evaluate_run, held_out_mask, take_rows, translation_pairs
    from ..plotting import plot_translation_scatter
    from ..truth import cell_ids_for


    domains = list(config["domains"])
    lat = {
        d: read_h5ad((latents or {}).get(d) or model_dir(config, method, seed) / f"{d}.h5ad", f"latent of {d!r}")
        for d in domains
    }
    # the model's layers (and ATAC's binary one), a large sparse X left in its file: at 1M
    # cells reading every prepared matrix whole took 12 GiB for a few thousand scored rows
    prep = read_prepared(config, prepared, for_evaluation=True)
    trans = {}
    try:
        for s in domains:
            for t in domains:
                path = (translated or {}).get((s, t)) or translated_path(config, method, seed, s, t)
                trans[(s, t)] = read_h5ad(path, f"translation {s} -> {t}", backed=True)
        truth = _truth_or_none(config)
        ev = config["evaluation"]
        result = evaluate_run(
            lat,
            translations=trans,
            prepared=prep,
            truth=truth,
            label_key=config["label_key"],
            latent_dim=config["model"]["latent_dim"],
            k_values=tuple(ev["k"]),
            label_k=ev["label_k"],
            entropy_k=ev["entropy_k"],
            top_genes=ev["top_genes"],
            max_cells=ev["max_cells"],
            sample_seed=ev["sample_seed"],
        )
        result = {"method": method, "seed": int(seed), **result}
        write_json(result, output or metrics_path(config, method, seed))

        for (s, t), path in (scatters or {}).items():
            if truth is None:
                raise InputError(None, f"scatter {s} -> {t} needs a truth table (config 'truth')")
            # the pairs (and sample of pairs) the translation metrics of s -> t were computed on
            mask = held_out_mask(lat[s])[0]
            ip, it, _ = translation_pairs(
                trans[(s, t)], mask, cell_ids_for(lat[s].obs.loc[mask], truth), prep[t], truth,
                max_cells=ev["max_cells"], seed=ev["sample_seed"], key=f"{s}_to_{t}",
            )
            plot_translation_scatter(
                take_rows(trans[(s, t)].X, ip), take_rows(prep[t].X, it), feature_names=list(prep[t].var_names),
                path=path,
                title=f"{method}, seed {seed}: {s} → {t}, held-out cells with a measured partner",
                units=get_modality(config["domains"][t]["modality"]).units,
            )
    finally:
        for tr in trans.values():
            tr.file.close()
    return result


def shift_figure(
    config: dict[str, Any],
    method: str,
    seed: int,
    *,
    prepared: dict[str, PathLike] | None = None,
    model_path: PathLike | None = None,
    output: PathLike | None = None,
) -> Path:
    """Draw one model's latent-shift figure (:func:`plot_shift`), ``plots/evaluate/{method}/seed{seed}/latent_shift.png``.

    Its own job (rule ``plot_shift``): the only step after training that decodes with the
    model besides translation, so scoring (:func:`evaluate`) never loads the model.
    """
    from ..model import CrossModalModel

    prep = read_prepared(config, prepared, for_evaluation=True)
    model = CrossModalModel.load(model_path or model_dir(config, method, seed), prep)
    ev = config["evaluation"]
    path = output or results_dir(config) / "plots" / "evaluate" / method / f"seed{seed}" / "latent_shift.png"
    return plot_shift(
        model, prep, path=path, label_key=config["label_key"], title=f"{method}, seed {seed}",
        max_cells=ev["max_cells"], seed=ev["sample_seed"],
    )  # fmt: skip


def plot_latents(
    config: dict[str, Any], items: list[tuple[str, int, dict[str, PathLike], PathLike]], *, seed: int = 0
) -> None:
    """UMAP of the joint latent of held-out cells for each (method, seed, latents, png).

    All models are embedded in one process: UMAP's numba compilation (tens of seconds)
    is then paid once per run rather than once per model.
    """
    import numpy as np

    from ..evaluate import held_out_mask, labels_for
    from ..plotting import plot_joint_latent
    from ..truth import cell_ids_for

    truth = _truth_or_none(config)
    label_key = config["label_key"]
    # UMAP of a seeded sample of the held-out cells above this; the title gives the sizes
    max_cells = config["evaluation"]["umap_max_cells"]
    for method, model_seed, latents, png in items:
        lat = {d: read_h5ad(p, f"latent of {d!r}") for d, p in latents.items()}
        z, labels = {}, {}
        for d, a in lat.items():
            held = a[held_out_mask(a)[0]]
            z[d] = np.asarray(held.obsm[LATENT_KEY])
            ids = cell_ids_for(held.obs, truth) if truth is not None else None
            found = labels_for(held, label_key, ids, truth)
            if found is not None:
                labels[d] = found
        plot_joint_latent(
            z, labels=labels or None, path=png, method=f"{method} (seed {model_seed}), held-out cells", seed=seed,
            max_cells=max_cells,
        )


def plot_shift(
    model, adatas: dict, *, path: PathLike, label_key: str | None, title: str = "",
    max_cells: int | None = None, seed: int = 0,
) -> Path:  # fmt: skip
    """Latent-shift figure: the two largest groups of the first labelled domain (or two
    latent k-means clusters when no domain has labels), source moved onto target.

    With ``max_cells``, a larger domain is drawn on a seeded sample of that many cells
    (:func:`~cellbridge.evaluate.sample_rows`): the figure shows group means, and
    decoding every cell in every domain, twice, took gigabytes and minutes at 1M cells.
    """
    import numpy as np

    from ..evaluate import sample_rows
    from ..generate import latent_shift, shift_features
    from ..plotting import plot_latent_shift

    labelled = [d for d in adatas if label_key and label_key in adatas[d].obs and adatas[d].obs[label_key].notna().any()]
    domain = labelled[0] if labelled else next(iter(adatas))
    adata = adatas[domain]
    if max_cells is not None and adata.n_obs > max_cells:
        adata = adata[sample_rows(adata.n_obs, max_cells, seed=seed, key="latent_shift")].copy()
    groupby = label_key if labelled else "latent_cluster"
    if not labelled:
        from sklearn.cluster import KMeans

        adata = adata.copy()
        z = model.get_latent(domain, adata)
        adata.obs[groupby] = KMeans(2, n_init=10, random_state=0).fit_predict(z).astype(str)
    source, target = adata.obs[groupby].astype(str).value_counts().index[:2]
    before, after, vec = latent_shift(model, domain, groupby=groupby, source=source, target=target, adata=adata)
    logger.info("latent shift %s -> %s in %s: |shift| = %.3g", source, target, domain, float(np.linalg.norm(vec)))
    return plot_latent_shift(
        shift_features(before), shift_features(after),
        feature_names={d: list(before[d].var_names) for d in before}, path=path,
        title=f"{title}: {domain} cells of {groupby}={source} shifted towards {target}, decoded in every domain",
    )


#: How the rows of comparison tables are labelled: trained aligners are ``method``; the
#: references every method must beat are baselines.
BASELINES = {"none": "baseline: no alignment", "trivial": "baseline: training mean"}
#: Significant digits kept in the comparison tables (differences between seeds are larger).
TABLE_DIGITS = 4


def _count_column(name: str) -> bool:
    return name.startswith("n_")


def _rounded(table, digits: int = TABLE_DIGITS):
    """Counts (``n_*`` columns, ``seed``) as nullable integers, other numbers to ``digits`` significant digits."""
    import numpy as np
    import pandas as pd

    out = table.copy()
    for col in out.columns:
        if not pd.api.types.is_numeric_dtype(out[col]):
            continue
        if col == "seed" or col == "n_seeds" or _count_column(col.removesuffix("_mean")):
            out[col] = pd.array(np.round(out[col].to_numpy(dtype=float)), dtype="Int64")
        else:
            values = out[col].to_numpy(dtype=float)
            with np.errstate(divide="ignore", invalid="ignore"):
                scale = np.where(values == 0, 0, np.floor(np.log10(np.abs(values))))
            decimals = np.clip(digits - 1 - np.nan_to_num(scale), 0, 12).astype(int)
            out[col] = [round(v, int(d)) if np.isfinite(v) else np.nan for v, d in zip(values, decimals, strict=True)]
    return out


def comparison_tables(results: list[dict[str, Any]]):
    """The per-seed and the summary comparison of evaluation results (``metrics/*.json`` contents).

    Returns
    -------
    per_seed
        One row per method and seed: ``method``, ``kind`` (``method`` or the baseline it is,
        :data:`BASELINES`), ``seed`` (empty for the ``trivial`` predictor, which has none) and
        every metric; counts as integers, other values to :data:`TABLE_DIGITS` significant digits.
    summary
        One row per method: ``method``, ``kind``, ``n_seeds``, then ``<metric>_mean`` and, where
        some method has at least two seeds, ``<metric>_sd`` (sample SD, empty for methods with
        one seed); counts are not averaged into SDs (only ``<count>_mean`` is given).
    """
    import numpy as np
    import pandas as pd

    rows, trivial = [], {}
    for res in results:
        rows.append({"method": res["method"], "seed": res["seed"], **res["metrics"]})
        trivial.update(res.get("trivial", {}))
    per_seed = pd.DataFrame(rows)
    if trivial:
        per_seed = pd.concat([per_seed, pd.DataFrame([{"method": "trivial", "seed": np.nan, **trivial}])])
    per_seed.insert(1, "kind", per_seed["method"].map(BASELINES).fillna("method"))
    # trained methods first (in the order given), then the baselines
    order = {m: i for i, m in enumerate(dict.fromkeys(r["method"] for r in rows if r["method"] not in BASELINES))}
    order.update({b: len(order) + i for i, b in enumerate(BASELINES)})
    per_seed = per_seed.assign(_order=per_seed["method"].map(order)).sort_values(["_order", "seed"])
    per_seed = per_seed.drop(columns="_order").reset_index(drop=True)
    metrics = [c for c in per_seed.columns if c not in ("method", "kind", "seed")]
    grouped = per_seed.groupby("method", sort=False)
    summary = pd.DataFrame({"method": list(grouped.groups), "kind": grouped["kind"].first().to_numpy()})
    n_seeds = grouped["seed"].count().to_numpy()
    summary["n_seeds"] = n_seeds
    several = bool((n_seeds >= 2).any())
    for m in metrics:
        summary[f"{m}_mean"] = grouped[m].mean().to_numpy()
        if several and not _count_column(m):
            sd = grouped[m].std(ddof=1).to_numpy()
            summary[f"{m}_sd"] = np.where(n_seeds >= 2, sd, np.nan)
    return _rounded(per_seed), _rounded(summary)


def compare(
    config: dict[str, Any],
    metric_files: list[PathLike],
    *,
    table: PathLike,
    summary: PathLike | None = None,
    figure: PathLike | None = None,
    results_page: PathLike | None = None,
):
    """Gather all methods x seeds into one table (plus the trivial predictor) and a figure.

    ``table`` and ``summary`` are the two tables of :func:`comparison_tables` (TSV);
    ``figure`` the headline metrics per method (:func:`cellbridge.plotting.plot_comparison`);
    ``results_page`` the HTML fragment the report opens on (:func:`cellbridge.report.results_page`).
    """
    import json

    from .._io import write_table
    from ..plotting import plot_comparison

    per_seed, summary_table = comparison_tables([json.loads(Path(f).read_text()) for f in metric_files])
    write_table(per_seed, table, index=False)
    if summary is not None:
        write_table(summary_table, summary, index=False)
    if figure is not None:
        plot_comparison(
            per_seed.drop(columns="kind"), path=figure, metrics=headline_metrics(per_seed) or None,
            title=f"run '{config['run']}': held-out cells",
        )
    if results_page is not None:
        from ..report import results_page as write_results_page

        write_results_page(config, per_seed, summary_table, figure=figure, path=results_page)
    return per_seed


def headline_metrics(table) -> list[str]:
    """The headline metric columns of a comparison table (:data:`cellbridge.evaluate.HEADLINE_METRICS`)."""
    from ..evaluate import HEADLINE_METRICS

    return [c for h in HEADLINE_METRICS for c in table.columns if c == h or c.startswith(f"{h}_")][:12]
