from curation.config import LabelerConfig
from curation.labelers.zero_shot import ZeroShotLabeler
from curation.relevance import get_prompt


def test_offline_zero_shot_separates_products_from_prose(real_texts):
    commerce, other = real_texts
    labeler = ZeroShotLabeler(LabelerConfig(max_chars=300))
    texts = commerce[:15] + other[:15]
    results = labeler.label_batch(texts, get_prompt("v2"))
    labels = [r.label for r in results]
    accuracy = (sum(labels[:15]) + (15 - sum(labels[15:]))) / 30
    assert accuracy >= 0.8
    assert all(r.status == "ok" and float(r.raw) == float(r.raw) for r in results)
    # the prompt version changes the prototypes, not the (memoised) document embeddings
    n_memo = len(labeler._memo)
    labeler.label_batch(texts, get_prompt("v1"))
    assert len(labeler._memo) == n_memo


def test_identity_tracks_settings():
    a = ZeroShotLabeler(LabelerConfig(max_chars=300)).identity
    b = ZeroShotLabeler(LabelerConfig(max_chars=300, chunks=2)).identity
    assert a != b
