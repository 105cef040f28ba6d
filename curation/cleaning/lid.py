"""English language ID with the local fastText ``lid.176`` model, scored in batches (one C++ call per
batch)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

LID_MAX_CHARS = 20_000  # a prefix identifies the language; bounds the cost of huge documents


class LanguageId:
    """keep(texts) -> list of (kept, language, score); datatrove-equivalent decision: keep when the score of a
    wanted language exceeds ``threshold`` (datatrove LanguageFilter with ``languages=[...]``)."""

    def __init__(self, model_path: str | Path, languages: Sequence[str] = ("en",), threshold: float = 0.65):
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"language-ID model {path} not found (cleaning.lid.model_path)")
        self.model_path = str(path)
        self.languages = list(languages)
        self.threshold = threshold
        self._model = None

    @property
    def model(self):
        if self._model is None:
            from fasttext.FastText import _FastText

            self._model = _FastText(self.model_path)
        return self._model

    def predict(self, texts: Sequence[str]) -> list[tuple[bool, str, float]]:
        lines = [t[:LID_MAX_CHARS].replace("\n", " ") for t in texts]
        labels, probs = self.model.predict(lines, k=-1, threshold=0.0)
        out = []
        for labs, ps in zip(labels, probs):
            scores = {lab.removeprefix("__label__"): float(p) for lab, p in zip(labs, ps)}
            best = max(scores.items(), key=lambda kv: kv[1]) if scores else ("unk", 0.0)
            kept = any(scores.get(lang, 0.0) > self.threshold for lang in self.languages)
            out.append((kept, best[0], best[1]))
        return out
