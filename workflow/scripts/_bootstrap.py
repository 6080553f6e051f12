"""Make the cellbridge package importable in every workflow job.

Snakemake puts this folder on ``sys.path`` for local scripts. A job in the workflow's
conda env (``envs/cellbridge.yaml``, ``--sdm conda``) has the dependencies but not
cellbridge itself, so the source tree is added here; where cellbridge is installed
(``pip install -e .``) this does nothing.
"""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("cellbridge") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
