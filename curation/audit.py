"""Step 4, QA audit metrics: a stronger labeler re-labels a fixed subset; agreement, Cohen's kappa
(scikit-learn), confusion matrix and example disagreements per round. The loop is
``curation.labelling.label_and_audit``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from curation.relevance import LABEL_NAMES


def agreement_metrics(primary: Sequence[int], auditor: Sequence[int]) -> dict[str, Any]:
    """Agreement, Cohen's kappa and the 2x2 confusion matrix (rows = auditor, cols = primary)."""
    from sklearn.metrics import cohen_kappa_score, confusion_matrix

    n = len(primary)
    if n == 0:
        return {"n": 0, "agreement": None, "cohen_kappa": None, "confusion": [[0, 0], [0, 0]]}
    agree = sum(int(a == b) for a, b in zip(primary, auditor)) / n
    kappa = float(cohen_kappa_score(auditor, primary, labels=[0, 1]))
    if (
        kappa != kappa
    ):  # NaN when both raters use a single identical label: perfect agreement, undefined kappa
        kappa = None
    matrix = confusion_matrix(auditor, primary, labels=[0, 1]).tolist()
    return {
        "n": n,
        "agreement": agree,
        "cohen_kappa": kappa,
        "confusion": matrix,
        "confusion_labels": [LABEL_NAMES[0], LABEL_NAMES[1]],
    }


@dataclass
class AuditRound:
    prompt_version: str
    overall: dict[str, Any]
    per_domain: dict[str, dict[str, Any]]
    disagreements: dict[str, list[dict[str, Any]]]
    label_stats: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompt_version": self.prompt_version,
            "overall": self.overall,
            "per_domain": self.per_domain,
            "disagreements": self.disagreements,
            "label_stats": self.label_stats,
        }


def audit_round(
    version: str,
    domains: Sequence[str],
    ids: Sequence[str],
    texts: Sequence[str],
    primary: Sequence[int | None],
    auditor: Sequence[int | None],
    examples_per_domain: int = 3,
) -> AuditRound:
    """Compare two label vectors over the audited docs (pairs where either side is missing are skipped)."""
    pairs = [(i, p, a) for i, (p, a) in enumerate(zip(primary, auditor)) if p is not None and a is not None]
    overall = agreement_metrics([p for _, p, _ in pairs], [a for _, _, a in pairs])
    overall["skipped_missing_label"] = len(primary) - len(pairs)
    per_domain, disagreements = {}, {}
    for domain in sorted(set(domains)):
        sub = [(i, p, a) for i, p, a in pairs if domains[i] == domain]
        per_domain[domain] = agreement_metrics([p for _, p, _ in sub], [a for _, _, a in sub])
        disagreements[domain] = [
            {"id": ids[i], "primary": LABEL_NAMES[p], "auditor": LABEL_NAMES[a], "text": texts[i][:300]}
            for i, p, a in sub
            if p != a
        ][:examples_per_domain]
    return AuditRound(version, overall, per_domain, disagreements)
