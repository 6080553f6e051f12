"""cellbridge: translate single cells between imaging and sequencing modalities.

One autoencoder per measurement domain (RNA, ATAC, protein, nucleus images, or any
real-valued features a user brings: PCA, topics, methylation rates) maps
cells into a shared latent space; an alignment loss (adversarial, Wasserstein or
MMD) pulls the domains together so cells can be encoded in one domain and decoded
in another, following Yang et al., Nat. Commun. 12, 31 (2021).
"""

from ._io import InputError
from .contract import package_version

__version__ = package_version()

__all__ = ["CrossModalModel", "InputError", "__version__"]


def __getattr__(name: str):
    # Imported on first use: torch takes seconds to import, and preprocessing, the
    # simulator and the CLI's config validation do not need it.
    if name == "CrossModalModel":
        from .model import CrossModalModel

        return CrossModalModel
    raise AttributeError(f"module 'cellbridge' has no attribute {name!r}")
