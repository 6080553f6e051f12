"""Rule plot_latents: UMAP of the joint latent of every model (one process for all)."""

import _bootstrap  # noqa: F401  (makes cellbridge importable, see _bootstrap.py)
from cellbridge import stages
from cellbridge._logging import log_to_file

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to_file(sm.log[0]):
    cfg = sm.config
    domains = list(cfg["domains"])
    items, latents, pngs = [], iter(sm.input.latents), iter(sm.output.umaps)
    for method in stages.methods(cfg):
        for seed in cfg["seeds"]:
            items.append((method, seed, {d: next(latents) for d in domains}, next(pngs)))
    stages.plot_latents(cfg, items)
