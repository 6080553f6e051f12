"""Logging for workflow steps: everything a step says goes to its Snakemake log file."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path

from ._io import exit_process, is_user_error

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def log_to_file(path: str | os.PathLike | None) -> Iterator[logging.Logger]:
    """Send ``cellbridge`` logging, Python warnings and a failing traceback to ``path``.

    Used by the thin workflow scripts so every rule's ``log:`` file holds what the
    step did and, when it fails, why. An error whose message says it all
    (:func:`~cellbridge._io.is_user_error`: a bad input, diverged training) is written as
    one line, to the log and to stderr, and ends the job with exit status 1; any other
    exception is logged with its traceback and re-raised for Snakemake.
    """
    logger = logging.getLogger("cellbridge")
    logger.setLevel(logging.INFO)
    handler: logging.Handler
    if path is None:
        handler = logging.StreamHandler()
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter(_FORMAT))
    logger.addHandler(handler)
    logging.captureWarnings(True)
    warn_logger = logging.getLogger("py.warnings")
    warn_logger.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            yield logger
    except BaseException as err:
        if not is_user_error(err):
            logger.error("step failed:\n%s", traceback.format_exc())
            raise
        logger.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        handler.close()
        exit_process(err, 1)
        raise SystemExit(1) from None
    finally:
        logger.removeHandler(handler)
        warn_logger.removeHandler(handler)
        handler.close()
