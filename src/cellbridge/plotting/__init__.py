"""Figures: pure functions from arrays or tables to a PNG, one module per subject.

Every function takes numpy arrays (scipy sparse matrices where a modality is usually
stored sparse) or a :class:`pandas.DataFrame`, draws one figure, writes it atomically
with :func:`cellbridge._io.save_figure` and returns the path. None of them reads
files or model objects, so each can be called from a stage, a notebook or a test.

* :mod:`~cellbridge.plotting.latent` -- :func:`plot_joint_latent`, UMAP (or PCA) of the
  joint latent space coloured by domain and by cell label; :func:`plot_latent_shift`,
  the predicted change of every domain after adding an attribute vector in latent space;
* :mod:`~cellbridge.plotting.translation` -- :func:`plot_translation_scatter`, predicted
  vs measured values of the best- and worst-predicted features with the distribution of
  per-feature Pearson r; :func:`plot_image_gallery`, source cells, predicted nuclei and
  measured nuclei;
* :mod:`~cellbridge.plotting.comparison` -- :func:`plot_comparison`, one panel per
  metric, one bar per method (mean +- std over seeds) with the ``none`` (no alignment)
  and ``trivial`` (training mean) references as lines; :func:`plot_reconstruction_vs_pca`,
  held-out reconstruction error of the autoencoder vs PCA at the same latent size vs the
  training-mean predictor;
* :mod:`~cellbridge.plotting.training` -- :func:`plot_history`, the training curves;
* :mod:`~cellbridge.plotting.qc` -- :func:`plot_qc`, the QC table of a prepared vector
  domain (the image QC sheet re-segments a field, so it stays with the imaging
  preprocessing: :func:`cellbridge.preprocess.image.plot_image_qc`);
* :mod:`~cellbridge.plotting._common` -- what they share: a colour per domain
  (:func:`domain_colors`, the same in every figure), input checks, feature picks.

Missing values (NaN) are skipped, never propagated into a whole panel; inputs whose
shapes do not match raise a :class:`ValueError` naming the arguments.
"""

from ._common import best_and_worst, domain_colors
from .comparison import (
    LOWER_IS_BETTER,
    METRIC_NAMES,
    REFERENCE_METHODS,
    metric_label,
    plot_comparison,
    plot_reconstruction_vs_pca,
)
from .latent import plot_joint_latent, plot_latent_shift
from .qc import plot_qc
from .training import plot_history
from .translation import plot_image_gallery, plot_translation_scatter

__all__ = [
    "LOWER_IS_BETTER",
    "METRIC_NAMES",
    "REFERENCE_METHODS",
    "best_and_worst",
    "domain_colors",
    "metric_label",
    "plot_comparison",
    "plot_history",
    "plot_image_gallery",
    "plot_joint_latent",
    "plot_latent_shift",
    "plot_qc",
    "plot_reconstruction_vs_pca",
    "plot_translation_scatter",
]
