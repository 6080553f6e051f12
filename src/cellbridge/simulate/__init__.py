"""Built-in demo: cells measured jointly (ground truth), written as unpaired domains.

The latent state of each cell (:func:`simulate_states`: cell type, a continuous
activation program and an RNA-only cell-cycle nuisance) drives RNA counts
(:func:`simulate_rna`), ATAC peak counts (:func:`simulate_atac`) and nucleus
morphology in microscopy fields (:func:`simulate_images`). :func:`simulate_demo`
writes everything, plus ``truth.tsv`` for evaluation, to a folder.
"""

from .atac import peak_open_probability, peak_programs, simulate_atac
from .imaging import (
    MORPHOLOGY_TRAITS,
    ImageSimulation,
    nucleus_extent,
    nucleus_traits,
    place_nuclei,
    render_field,
    render_nucleus,
    simulate_images,
    type_morphology_levels,
)
from .rna import MITO_GENES, gene_programs, rna_expression_proportions, simulate_rna
from .state import default_type_proportions, simulate_states, type_names
from .writer import build_truth_table, field_file_names, image_label_table, simulate_demo

__all__ = [
    "MITO_GENES",
    "MORPHOLOGY_TRAITS",
    "ImageSimulation",
    "build_truth_table",
    "default_type_proportions",
    "field_file_names",
    "gene_programs",
    "image_label_table",
    "nucleus_extent",
    "nucleus_traits",
    "peak_open_probability",
    "peak_programs",
    "place_nuclei",
    "render_field",
    "render_nucleus",
    "rna_expression_proportions",
    "simulate_atac",
    "simulate_demo",
    "simulate_images",
    "simulate_rna",
    "simulate_states",
    "type_morphology_levels",
    "type_names",
]
