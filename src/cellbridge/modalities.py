"""The modality registry: one entry per kind of measurement a domain can hold.

Everything the rest of cellbridge needs to know about a modality is its entry here: the
function that prepares it, the likelihoods its autoencoder may use, whether its input
must be counts, what its prepared ``X`` holds and how its QC figure is drawn. Code that
depends on the modality looks the entry up (:func:`get_modality`); an unknown name is an
error, never a fallback to another modality's handling.

Adding a vector modality is one new file, ``preprocess/<name>.py`` with a
``prepare_<name>(adata, *, domain, label_key, labels, source, **params)`` that ends in
:func:`cellbridge.contract.finalize_domain`, and one entry below; the config schema
names it in ``domains.*.modality`` and gives its parameters under ``preprocess.<name>``
(``tests/test_prepare_features.py`` holds the schema to this registry). ``image`` is the
one non-vector modality: its domains hold crops (``obsm["image"]``) and its encoder is
convolutional.

This module imports nothing of cellbridge: every layer may read it. Preparers are named
as ``"module:function"`` under :mod:`cellbridge.preprocess` and imported only when a
domain is prepared.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class QCPanel:
    """One histogram of a vector modality's QC figure (:func:`cellbridge.plotting.plot_qc`)."""

    column: str  #: per-cell column of the QC table (``uns["cellbridge"]["qc"]``)
    title: str
    threshold: str | None = None  #: preprocessing parameter drawn as the cut-off
    log: bool = False  #: drawn as log10(x + 1)


@dataclass(frozen=True)
class Modality:
    """A registry entry: what cellbridge needs to know about one modality."""

    name: str
    #: ``"module:function"`` in :mod:`cellbridge.preprocess` that prepares a domain
    preparer: str
    #: likelihoods its autoencoder may use; the first is what ``"auto"`` picks
    likelihoods: tuple[str, ...]
    #: what a prepared ``X`` holds (axis labels of figures)
    units: str
    #: prepared from raw counts (refused when the input is not plausibly counts; kept in
    #: ``layers["counts"]``)
    counts: bool = False
    #: nucleus crops in ``obsm["image"]`` and a convolutional autoencoder; else a vector domain
    image: bool = False
    #: what one feature is called ("genes")
    feature_noun: str = "features"
    #: the QC figure's histograms (vector modalities); the first is also plotted against
    #: total counts when the table has them
    qc_panels: tuple[QCPanel, ...] = ()

    def prepare_function(self) -> Callable:
        """Import and return the preparer (:attr:`preparer`)."""
        module, function = self.preparer.split(":")
        return getattr(importlib.import_module(f"cellbridge.preprocess.{module}"), function)


REGISTRY: dict[str, Modality] = {
    m.name: m
    for m in (
        Modality(
            "rna",
            "rna:prepare_rna",
            # Gaussian on log-normalised X is the default: it optimises the very values a
            # translation is scored against (per-gene correlation with measured X) and gives
            # every gene equal weight, whereas the NB likelihood is dominated by a few highly
            # expressed genes; "nb" is there for count-faithful reconstructions
            ("gaussian", "nb"),
            "log1p-normalised expression",
            counts=True,
            feature_noun="genes",
            qc_panels=(
                QCPanel("n_genes_by_counts", "detected genes per cell", "min_genes"),
                QCPanel("total_counts", "total counts per cell", log=True),
                QCPanel("pct_counts_mt", "% counts in mitochondrial genes", "max_pct_mito"),
            ),
        ),
        Modality(
            "atac",
            "atac:prepare_atac",
            ("bernoulli", "gaussian"),
            "TF-IDF",
            counts=True,
            feature_noun="peaks",
            qc_panels=(
                QCPanel("n_peaks", "accessible peaks per cell", "min_peaks_per_cell"),
                QCPanel("total_counts", "total counts per cell", log=True),
            ),
        ),
        Modality(
            "protein",
            "protein:prepare_protein",
            ("gaussian", "nb"),
            "CLR",
            counts=True,
            feature_noun="proteins",
            qc_panels=(QCPanel("total_counts", "total antibody counts per cell", "min_counts", log=True),),
        ),
        Modality("image", "image:prepare_image", ("mse", "bce"), "morphology feature", image=True, feature_noun="crops"),
        Modality(
            "features",
            "features:prepare_features",
            # any real values (PCA, topics, methylation rates): nothing but X to compare
            # with; "mse" is the Gaussian's fixed-scale loss, never a learned per-feature scale
            ("gaussian", "mse"),
            "feature value",  # as given, or standardised when asked
            # no cell is filtered; the spread of the input values per cell shows outlier
            # cells and how the values were scaled before cellbridge saw them
            qc_panels=(
                QCPanel("mean_value", "mean input value per cell"),
                QCPanel("sd_value", "SD of input values per cell"),
            ),
        ),
    )
}

#: every registered modality's name
MODALITIES: tuple[str, ...] = tuple(REGISTRY)
#: modalities prepared from raw counts (kept in ``layers["counts"]``)
COUNT_MODALITIES: tuple[str, ...] = tuple(m.name for m in REGISTRY.values() if m.counts)


def get_modality(name: str) -> Modality:
    """The registry entry of ``name``; a :class:`ValueError` listing the known ones otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown modality {name!r}; known: {', '.join(MODALITIES)}") from None
