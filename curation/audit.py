"""Step 4, QA audit: a stronger labeler re-labels a stratified subset; agreement, Cohen's kappa, confusion.

The loop (``run_audit_loop``) labels with prompt version k, audits it, and moves to version k+1 while
agreement
is below target and still improving; every round's record is kept.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from curation.relevance import LABEL_NAMES
from curation.sampling import sample_key


def stratified_subset(
    domains: Sequence[str], labels: Sequence[int | None], ids: Sequence[str], per_stratum: int, seed: int
) -> list[int]:
    """Indices: up to ``per_stratum`` docs of every (domain, label) stratum, seeded, so rare labels are
    audited."""
    strata: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, (domain, label) in enumerate(zip(domains, labels)):
        if label is not None:
            strata[(domain, label)].append(i)
    chosen: list[int] = []
    for key in sorted(strata):
        members = sorted(strata[key], key=lambda i: sample_key(seed, ids[i]))
        chosen.extend(members[:per_stratum])
    return sorted(chosen)


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


def run_audit_loop(
    versions: Sequence[str],
    run_round: Callable[[str], AuditRound],
    target_agreement: float,
    min_improvement: float,
) -> tuple[list[AuditRound], str]:
    """Try prompt versions in order until agreement >= target or stops improving; returns rounds + chosen
    version.

    The chosen version is the one with the best agreement (ties: the earlier, simpler definition).
    """
    rounds: list[AuditRound] = []
    for version in versions:
        current = run_round(version)
        rounds.append(current)
        agreement = current.overall["agreement"] or 0.0
        if agreement >= target_agreement:
            break
        if len(rounds) >= 2 and agreement - (rounds[-2].overall["agreement"] or 0.0) < min_improvement:
            break
    best = max(rounds, key=lambda r: (r.overall["agreement"] or 0.0, -rounds.index(r)))
    return rounds, best.prompt_version
