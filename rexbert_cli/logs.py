"""Quiet library logging for the command line: progress bars and one line per stage, INFO only on request.

Each library is switched with its own documented control: transformers, datasets and huggingface_hub
through their verbosity environment variables (read when first imported, so the CLI imports none of them
before it needs them) and their ``set_verbosity_*`` functions once imported; datatrove through loguru's
per-library ``disable``. sentence-transformers and accelerate log through plain ``logging`` with no switch
of their own, so their logger levels are set directly.

transformers logs a LOAD REPORT table at WARNING level for every checkpoint whose keys differ from the
model's. A head that a task model drops on purpose (``UNEXPECTED head.*`` when an MLM checkpoint is loaded
into a sentence encoder) is expected and only noise; a report that lists MISSING or MISMATCHED weights is
kept, because it means freshly initialised weights. No library switch separates the two: a filter does.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

from rexbert_common.executors import VERBOSE_ENV

# library -> (its verbosity environment variable, the module holding its set_verbosity_* functions)
VERBOSITY_SWITCHES = {
    "transformers": ("TRANSFORMERS_VERBOSITY", "transformers.utils.logging"),
    "datasets": ("DATASETS_VERBOSITY", "datasets.utils.logging"),
    "huggingface_hub": ("HF_HUB_VERBOSITY", "huggingface_hub.utils.logging"),
}
PLAIN_LOGGING = ("sentence_transformers", "accelerate")
_KEEP_REPORT_WORDS = ("MISSING", "MISMATCH", "CONVERSION", "ERROR")
# transformers logs the report through the logger of the module that loads the weights
_REPORT_LOGGERS = ("transformers.modeling_utils", "transformers.utils.loading_report")


# Library warnings that are expected here and say nothing actionable (logger -> message start): training
# names checkpoints by step, so transformers falling back to numerical order is exactly right.
EXPECTED_WARNINGS = {
    "transformers.trainer_utils": ("mtime may not be reliable on this filesystem",),
}


class ExpectedWarningFilter(logging.Filter):
    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.starts)


class DroppedHeadReportFilter(logging.Filter):
    """Drops transformers' LOAD REPORT records that only list unexpected (deliberately dropped) weights."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message:
            return True
        return any(word in message for word in _KEEP_REPORT_WORDS)


def _datatrove(verbose: bool) -> None:
    """datatrove logs through loguru (rank 0 at INFO on stderr); loguru's switch is per library name."""
    try:
        from loguru import logger
    except ImportError:  # datatrove (and loguru with it) is optional at this level
        return
    (logger.enable if verbose else logger.disable)("datatrove")


def quiet_libraries(verbose: bool = False) -> None:
    """INFO logs of the ML libraries on with ``verbose``, else warnings only (minus dropped-head reports)."""
    level = "info" if verbose else "warning"
    for library, (variable, module) in VERBOSITY_SWITCHES.items():
        os.environ[variable] = level
        if library in sys.modules:
            getattr(importlib.import_module(module), f"set_verbosity_{level}")()
    for name in PLAIN_LOGGING:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    _datatrove(verbose)
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"  # for the processes stages start (datatrove workers)
    filters = [(name, DroppedHeadReportFilter()) for name in _REPORT_LOGGERS]
    filters += [(name, ExpectedWarningFilter(starts)) for name, starts in EXPECTED_WARNINGS.items()]
    for name, new in filters:
        library_logger = logging.getLogger(name)
        for old in [f for f in library_logger.filters if type(f) is type(new)]:
            library_logger.removeFilter(old)
        if not verbose:
            library_logger.addFilter(new)
