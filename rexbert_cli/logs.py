"""Quiet library logging for the command line: progress bars and one line per stage, INFO only on request.

transformers logs a LOAD REPORT table at WARNING level for every checkpoint whose keys differ from the
model's. A head that a task model drops on purpose (``UNEXPECTED head.*`` when an MLM checkpoint is loaded
into a sentence encoder) is expected and only noise; a report that lists MISSING or MISMATCHED weights is
kept, because it means freshly initialised weights.
"""

from __future__ import annotations

import logging
import os

LIBRARIES = (
    "transformers",
    "sentence_transformers",
    "datasets",
    "accelerate",
    "huggingface_hub",
    "datatrove",
)
_KEEP_REPORT_WORDS = ("MISSING", "MISMATCH", "CONVERSION", "ERROR")
# transformers logs the report through the logger of the module that loads the weights
_REPORT_LOGGERS = ("transformers.modeling_utils", "transformers.utils.loading_report")


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
    level = logging.INFO if verbose else logging.WARNING
    # transformers / datasets read these when first imported; the logger levels cover already-imported ones
    os.environ["TRANSFORMERS_VERBOSITY"] = "info" if verbose else "warning"
    os.environ["DATASETS_VERBOSITY"] = "info" if verbose else "warning"
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(level)
    _datatrove(verbose)
    for name in _REPORT_LOGGERS:
        report_logger = logging.getLogger(name)
        for old in [f for f in report_logger.filters if isinstance(f, DroppedHeadReportFilter)]:
            report_logger.removeFilter(old)
        if not verbose:
            report_logger.addFilter(DroppedHeadReportFilter())
