"""Pluggable relevance labelers: offline zero-shot encoder, OpenAI-compatible HTTP endpoint, local chat
model."""

from curation.labelers.base import (
    FileLabelCache,
    LabelCache,
    Labeler,
    LabelResult,
    cache_keys,
    label_documents,
    make_labeler,
)

__all__ = [
    "FileLabelCache",
    "LabelCache",
    "LabelResult",
    "Labeler",
    "cache_keys",
    "label_documents",
    "make_labeler",
]
