"""Batched lid.176 against datatrove's LanguageFilter pointed at the same local model."""

import pytest
from datatrove.data import Document
from datatrove.pipeline.filters import LanguageFilter

from curation.cleaning.lid import LanguageId


def test_same_decisions_as_datatrove_language_filter(data_dir, real_texts):
    model_path = data_dir / "fasttext_lid176" / "lid.176.ftz"
    ours = LanguageId(model_path, ["en"], 0.65)
    ref = LanguageFilter(languages=["en"], language_threshold=0.65)
    ref.model._model = ours.model  # datatrove would download lid.176.bin; use the local .ftz for both
    texts = real_texts[0][:150] + real_texts[1][:150] + ["Ceci est un texte en français, pas en anglais."]
    decisions = ours.predict(texts)
    for text, (kept, _lang, _score) in zip(texts, decisions):
        assert kept == bool(ref.filter(Document(text=text, id="x")))
    assert decisions[-1][:2] == (False, "fr")
    assert any(kept for kept, _, _ in decisions) and not all(kept for kept, _, _ in decisions)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="lid.176"):
        LanguageId(tmp_path / "lid.176.ftz")
