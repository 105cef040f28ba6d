"""Pluggable relevance labelers: offline zero-shot encoder, OpenAI-compatible HTTP endpoint, local chat
model."""

from curation.labelers.base import LabelCache, Labeler, LabelResult, label_documents, make_labeler

__all__ = ["LabelCache", "LabelResult", "Labeler", "label_documents", "make_labeler"]
