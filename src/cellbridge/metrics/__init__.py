"""Evaluation metrics for cross-modal integration and translation.

Every function here is a pure function of numpy arrays (scipy sparse matrices are
accepted where a modality is usually stored sparse), is deterministic, and raises a
:class:`ValueError` naming the argument when the input cannot give a meaningful
number (mismatched shapes, too few cells, NaN or infinite values).

The metrics fall into five groups, by module (:mod:`.alignment`, :mod:`.translation`,
:mod:`.baselines`; the shared input checks and blocking in :mod:`._checks`):

* **alignment with known pairs** (row ``i`` of ``za`` and ``zb`` is the same cell):
  :func:`foscttm`, :func:`foscttm_per_cell`, :func:`partner_in_knn`;
* **labels**: :func:`knn_label_transfer`, :func:`silhouette_by_label`,
  :func:`unshared_matched_fraction` (domains with partly shared cell types);
* **domain mixing**: :func:`domain_entropy`, :func:`domain_entropy_per_cell`,
  :func:`silhouette_by_domain`;
* **translation against measured truth**: :func:`per_feature_correlation`,
  :func:`per_cell_correlation`, :func:`rmse`, :func:`auroc_per_feature`,
  :func:`auroc`, :func:`pixel_mse`, :func:`ssim_per_crop`, :func:`ssim_mean`
  (morphology features are compared with :func:`per_feature_correlation`);
* **compression baselines**: :func:`pca_reconstruction_error`,
  :func:`mean_predictor_error`;

plus :func:`summarize` to reduce per-feature or per-cell values that contain NaN.

Quadratic computations (all cross-domain distances, ranks of large matrices) are
done in blocks of about ``2**22`` numbers so memory stays bounded for 10,000 cells.
Matrices of translated values and crops are not copied whole: float32 (or integer,
bool) input keeps its dtype and is converted to float64 one block of rows or columns
(or one crop) at a time, so the correlations, RMSE, per-feature AUROC, pixel MSE and
SSIM need a block beyond their input, not another matrix of every cell; only the pooled
:func:`auroc` ranks every entry at once. Time is still quadratic in cells for alignment,
neighbours and silhouettes: :mod:`cellbridge.evaluate` passes at most ``max_cells``
cells of each set (a seeded random sample above that) to every metric.
"""

from .alignment import (
    domain_entropy,
    domain_entropy_per_cell,
    foscttm,
    foscttm_per_cell,
    knn_label_transfer,
    partner_in_knn,
    silhouette_by_domain,
    silhouette_by_label,
    unshared_matched_fraction,
)
from .baselines import mean_predictor_error, pca_reconstruction_error, summarize
from .translation import (
    auroc,
    auroc_per_feature,
    per_cell_correlation,
    per_feature_correlation,
    pixel_mse,
    rmse,
    ssim_mean,
    ssim_per_crop,
)

__all__ = [
    "auroc",
    "auroc_per_feature",
    "domain_entropy",
    "domain_entropy_per_cell",
    "foscttm",
    "foscttm_per_cell",
    "knn_label_transfer",
    "mean_predictor_error",
    "partner_in_knn",
    "pca_reconstruction_error",
    "per_cell_correlation",
    "per_feature_correlation",
    "pixel_mse",
    "rmse",
    "silhouette_by_domain",
    "silhouette_by_label",
    "ssim_mean",
    "ssim_per_crop",
    "summarize",
    "unshared_matched_fraction",
]
