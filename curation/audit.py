"""Step 4, the QA audit that gates the labels: a different, stronger model re-labels a stratified subset.

Design (one task, the ``audit`` stage, before the sample is labelled in full):

* **pool**: per domain the ``audit.pool_per_domain`` sampled documents with the smallest audit key; the
  primary labeler labels it with the first prompt version -- the *first label* that stratifies the audit;
* **strata**: (domain, first label); per stratum ``subset_per_class`` documents by audit key, split by a
  second key into a *selection* half and a *confirmation* half; a stratum with fewer than
  ``min_per_stratum`` documents stops the audit (one line naming the strata);
* **rounds**: one per prompt version, on the selection half: primary and auditor label it, Cohen's kappa;
  the loop stops at the first version whose kappa reaches the target, and keeps the *best* round (highest
  kappa, the earliest on ties), not the last;
* **gate**: the chosen version is confirmed on the other half: kappa with a stratified bootstrap interval;
  the lower bound must reach ``target_agreement``, with at least ``min_pairs`` pairs.

Kappa is computed with each pair weighted by its stratum's share of the pool over the stratum's audited
count, so equal allocation per stratum does not bias it toward the rarer label (scikit-learn's
``cohen_kappa_score(sample_weight=...)`` gives the same number; the bootstrap needs thousands of them, so it
is vectorised here).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep

from curation.relevance import LABEL_NAMES
from rexbert_common.errors import UserError


class AuditTargetMissed(UserError):
    """The confirmed kappa's lower bound stayed below the target; every round is in ``audit.json``."""


class AuditTooThin(UserError):
    """Too few audited pairs (overall or in a stratum) to gate anything."""


class LabelCoverageError(UserError):
    """Labels missing for more documents than ``labeler.min_coverage`` allows (endpoint errors or answers
    that are not a label); nothing was cached for them, so a rerun asks again for exactly those."""


def check_coverage(what: str, statuses: Sequence[str], minimum: float) -> None:
    """Stop in one line when fewer than ``minimum`` of ``statuses`` are ``ok``."""
    total, ok = len(statuses), sum(s == "ok" for s in statuses)
    if total and ok / total < minimum:
        raise LabelCoverageError(
            f"{what}: labels for {ok:,} of {total:,} documents ({ok / total:.1%}) < labeler.min_coverage "
            f"{minimum:.1%}; {total - ok:,} failed (endpoint errors or answers that are not a label, "
            "retried, not cached): rerun the same command to ask again for those"
        )


# --------------------------------------------------------------------------- statistics


def weighted_kappa(primary: np.ndarray, auditor: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Cohen's kappa of binary labels, batched: inputs (..., n), output (...,). NaN where undefined (one
    label used by both raters)."""
    w = weights / weights.sum(axis=-1, keepdims=True)
    observed = (w * (primary == auditor)).sum(axis=-1)
    p1, a1 = (w * primary).sum(axis=-1), (w * auditor).sum(axis=-1)
    expected = p1 * a1 + (1 - p1) * (1 - a1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(expected < 1, (observed - expected) / (1 - expected), np.nan)


def stratified_bootstrap(
    strata: Sequence[Any],
    primary: Sequence[int],
    auditor: Sequence[int],
    weights: Sequence[float],
    resamples: int,
    confidence: float,
    seed: int,
) -> tuple[float | None, float | None, float | None]:
    """(kappa, lower, upper): the percentile interval of kappa over resamples drawn with replacement within
    each stratum (the audit's design), the weights kept."""
    p, a, w = (np.asarray(x, dtype=float) for x in (primary, auditor, weights))
    if len(p) == 0:
        return None, None, None
    point = float(weighted_kappa(p, a, w))
    rng = np.random.default_rng(seed)
    groups = defaultdict(list)
    for i, s in enumerate(strata):
        groups[s].append(i)
    picks = np.concatenate(
        [rng.choice(np.asarray(idx), size=(resamples, len(idx)), replace=True) for idx in groups.values()],
        axis=1,
    )  # (resamples, n)
    draws = weighted_kappa(p[picks], a[picks], w[picks])  # (resamples,)
    draws = draws[~np.isnan(draws)]
    if np.isnan(point) or len(draws) == 0:
        return None, None, None
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return point, float(low), float(high)


def agreement_metrics(primary: Sequence[int], auditor: Sequence[int]) -> dict[str, Any]:
    """Unweighted agreement, Cohen's kappa (scikit-learn) and the 2x2 confusion matrix (rows = auditor,
    cols = primary), for the per-domain breakdown."""
    from sklearn.metrics import cohen_kappa_score, confusion_matrix

    n = len(primary)
    if n == 0:
        return {"n": 0, "agreement": None, "cohen_kappa": None, "confusion": [[0, 0], [0, 0]]}
    agree = sum(int(a == b) for a, b in zip(primary, auditor)) / n
    kappa = float(cohen_kappa_score(auditor, primary, labels=[0, 1]))
    if kappa != kappa:  # NaN when both raters use one identical label: perfect agreement, undefined kappa
        kappa = None
    return {
        "n": n,
        "agreement": agree,
        "cohen_kappa": kappa,
        "confusion": confusion_matrix(auditor, primary, labels=[0, 1]).tolist(),
        "confusion_labels": [LABEL_NAMES[0], LABEL_NAMES[1]],
    }


# --------------------------------------------------------------------------- design


@dataclass
class AuditDesign:
    """Indexes into the pool: the two halves, each document's stratum and weight."""

    selection: list[int]
    confirmation: list[int]
    stratum: dict[int, tuple[str, int]]
    weight: dict[int, float]
    pool_counts: dict[tuple[str, int], int]


def design_audit(
    ids: Sequence[str],
    domains: Sequence[str],
    first_labels: Sequence[int],
    per_stratum: int,
    min_per_stratum: int,
    seed: int,
) -> AuditDesign:
    """Per (domain, first label) stratum the ``per_stratum`` documents with the smallest audit key,
    alternately into the selection and confirmation halves (by a second key)."""
    from curation.sampling import sample_key

    strata: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, (domain, label) in enumerate(zip(domains, first_labels)):
        strata[(domain, label)].append(i)
    thin = {s: len(idx) for s, idx in sorted(strata.items()) if len(idx) < min_per_stratum}
    if thin:
        shown = ", ".join(f"{d}/{LABEL_NAMES[lab]}: {n}" for (d, lab), n in thin.items())
        raise AuditTooThin(
            f"audit strata with fewer than audit.min_per_stratum={min_per_stratum} documents in the pool "
            f"({shown}): raise audit.pool_per_domain or sampling.per_domain, or lower audit.min_per_stratum"
        )
    design = AuditDesign([], [], {}, {}, {s: len(idx) for s, idx in strata.items()})
    for stratum, idx in sorted(strata.items()):
        chosen = sorted(idx, key=lambda i: sample_key(seed + 1, ids[i]))[:per_stratum]
        halves = (design.selection, design.confirmation)
        ordered = sorted(chosen, key=lambda i: sample_key(seed + 2, ids[i]))
        for k, i in enumerate(ordered):
            halves[k % 2].append(i)
            design.stratum[i] = stratum
        for half in halves:
            members = [i for i in half if design.stratum.get(i) == stratum]
            for i in members:
                design.weight[i] = len(idx) / len(members)
    design.selection.sort()
    design.confirmation.sort()
    return design


def score_half(
    design: AuditDesign,
    half: list[int],
    primary: Sequence[int | None],
    auditor: Sequence[int | None],
    domains: Sequence[str],
    ids: Sequence[str],
    texts: Sequence[str],
    resamples: int,
    confidence: float,
    seed: int,
) -> dict[str, Any]:
    """Weighted kappa with its interval over one half, plus the per-domain breakdown and disagreements."""
    pairs = [(i, p, a) for i, p, a in zip(half, primary, auditor) if p is not None and a is not None]
    kappa, low, high = stratified_bootstrap(
        [design.stratum[i] for i, _, _ in pairs],
        [p for _, p, _ in pairs],
        [a for _, _, a in pairs],
        [design.weight[i] for i, _, _ in pairs],
        resamples,
        confidence,
        seed,
    )
    per_domain, disagreements = {}, {}
    for domain in sorted({domains[i] for i in half}):
        sub = [(i, p, a) for i, p, a in pairs if domains[i] == domain]
        per_domain[domain] = agreement_metrics([p for _, p, _ in sub], [a for _, _, a in sub])
        disagreements[domain] = [
            {"id": ids[i], "primary": LABEL_NAMES[p], "auditor": LABEL_NAMES[a], "text": texts[i][:300]}
            for i, p, a in sub
            if p != a
        ][:3]
    return {
        "n": len(pairs),
        "missing_pairs": len(half) - len(pairs),
        "cohen_kappa": kappa,
        "kappa_interval": [low, high],
        "agreement": float(np.mean([p == a for _, p, a in pairs])) if pairs else None,
        "per_domain": per_domain,
        "disagreements": disagreements,
    }


def best_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the highest selection kappa (undefined kappa ranks last; ties: the earliest)."""
    return max(
        enumerate(rounds),
        key=lambda kr: (
            kr[1]["selection"]["cohen_kappa"] if kr[1]["selection"]["cohen_kappa"] is not None else -2.0,
            -kr[0],
        ),
    )[1]


# --------------------------------------------------------------------------- the loop


@dataclass
class AuditResult:
    record: dict[str, Any]
    chosen_version: str
    chosen_cache_key: str
    labels_cached: dict[str, int] = field(default_factory=dict)


def run_audit(config, ids, texts, domains, cache) -> AuditResult:
    """The loop on the pool (``config``: a CurationConfig). Raises AuditTooThin / LabelCoverageError /
    AuditTargetMissed (the latter only with ``on_target_missed: stop``) with one-line messages; the record
    is returned (and written by the caller) in every other case."""
    from curation.labelers import label_documents, make_labeler
    from curation.relevance import load_prompt

    audit = config.audit
    primary, auditor = make_labeler(config.labeler), make_labeler(audit.labeler)
    independent = primary.model_identity != auditor.model_identity
    if not independent and not audit.allow_same_model:
        raise UserError(
            f"audit.labeler runs the same model as the primary labeler ({primary.model_identity}): an audit "
            "by the same model measures self-agreement, not correctness; configure a different, stronger "
            "auditor (or set audit.allow_same_model: true to run a demo whose audit gates nothing)"
        )
    prompts = [load_prompt(config.prompts_dir(), v) for v in audit.prompt_versions]
    minimum = config.labeler.min_coverage

    def label(model, docs: list[int], prompt, batch_size: int, what: str) -> list[int | None]:
        results, _ = label_documents([texts[i] for i in docs], model, prompt, cache, batch_size, what)
        check_coverage(f"audit {what}", [r.status for r in results], minimum)
        return [r.label for r in results]

    everyone = list(range(len(ids)))
    first = label(primary, everyone, prompts[0], config.labeler.batch_size, f"pool {prompts[0].version}")
    known = [i for i in everyone if first[i] is not None]
    design = design_audit(
        [ids[i] for i in known],
        [domains[i] for i in known],
        [first[i] for i in known],
        audit.subset_per_class,
        audit.min_per_stratum,
        config.sampling.seed,
    )
    # design indexes are positions in `known`; map back to pool positions
    back = {k: i for k, i in enumerate(known)}
    design = AuditDesign(
        [back[k] for k in design.selection],
        [back[k] for k in design.confirmation],
        {back[k]: s for k, s in design.stratum.items()},
        {back[k]: w for k, w in design.weight.items()},
        design.pool_counts,
    )
    rounds, seed = [], config.sampling.seed
    for prompt in prompts:
        p = label(primary, design.selection, prompt, config.labeler.batch_size, f"primary {prompt.version}")
        a = label(auditor, design.selection, prompt, audit.labeler.batch_size, f"auditor {prompt.version}")
        scored = score_half(
            design, design.selection, p, a, domains, ids, texts, audit.bootstrap, audit.confidence, seed
        )
        rounds.append({"prompt_version": prompt.version, "cache_key": prompt.cache_key, "selection": scored})
        if scored["cohen_kappa"] is not None and scored["cohen_kappa"] >= audit.target_agreement:
            break
    best = best_round(rounds)
    prompt = next(pr for pr in prompts if pr.version == best["prompt_version"])
    p = label(primary, design.confirmation, prompt, config.labeler.batch_size, f"confirm {prompt.version}")
    a = label(auditor, design.confirmation, prompt, audit.labeler.batch_size, f"confirm {prompt.version}")
    confirmed = score_half(
        design, design.confirmation, p, a, domains, ids, texts, audit.bootstrap, audit.confidence, seed + 1
    )
    if confirmed["n"] < audit.min_pairs:
        raise AuditTooThin(
            f"the audit confirmed prompt {prompt.version} on {confirmed['n']} pairs "
            f"({confirmed['missing_pairs']} missing) < audit.min_pairs={audit.min_pairs}: raise "
            "audit.subset_per_class (or audit.pool_per_domain) or lower audit.min_pairs"
        )
    low = confirmed["kappa_interval"][0]
    reached = low is not None and low >= audit.target_agreement
    record = {
        "primary_labeler": primary.identity,
        "auditor_labeler": auditor.identity,
        "primary_model": primary.model_identity,
        "auditor_model": auditor.model_identity,
        "auditor_independent": independent,
        "gate_meaningful": independent,
        "pool_size": len(ids),
        "pool_strata": {f"{d}/{LABEL_NAMES[lab]}": n for (d, lab), n in sorted(design.pool_counts.items())},
        "audited_docs": len(design.selection) + len(design.confirmation),
        "target_kappa": audit.target_agreement,
        "confidence": audit.confidence,
        "chosen_prompt_version": prompt.version,
        "chosen_by": "highest selection-half kappa",
        "rounds": rounds,
        "confirmation": confirmed,
        "target_reached": reached,
    }
    return AuditResult(record, prompt.version, prompt.cache_key)


class AuditStage(PipelineStep):
    """The ``audit`` stage (one task): pool from the fetched sample -> :func:`run_audit` -> ``audit.json``
    (every round, the gate) and ``decision.json`` (the prompt version the label stage uses)."""

    name = "🔎 rexbert QA audit"
    type = "🛒 REXBERT"

    def __init__(
        self, config: dict[str, Any], fetched_folder: str, out_dir: str, cache_path: str, tasks: int
    ):
        super().__init__()
        self.config_dict = config  # a plain dict pickles into any executor's workers
        self.fetched_folder, self.out_dir, self.cache_path, self.tasks = (
            fetched_folder,
            out_dir,
            cache_path,
            tasks,
        )

    def pool(self, config) -> tuple[list[str], list[str], list[str]]:
        """(ids, texts, domains): per domain the ``pool_per_domain`` smallest audit keys of the sample,
        streamed from the fetched files (memory: the pool)."""
        import heapq

        from curation.labelling import read_rows
        from curation.sampling import sample_key

        heaps: dict[str, list] = defaultdict(list)
        size = config.audit.pool_per_domain
        for row in read_rows(self.fetched_folder, self.tasks, ("domain", "id", "text")):
            entry = (-sample_key(config.sampling.seed + 1, row["id"]), row["id"], row["text"])
            heap = heaps[row["domain"]]
            if len(heap) < size:
                heapq.heappush(heap, entry)
            elif entry > heap[0]:
                heapq.heapreplace(heap, entry)
        rows = sorted((d, -k, i, t) for d, heap in heaps.items() for k, i, t in heap)
        return [r[2] for r in rows], [r[3] for r in rows], [r[0] for r in rows]

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from curation.config import config_from_dict
        from curation.io_utils import write_json_atomic
        from curation.labelers import LabelCache

        config = config_from_dict(self.config_dict)
        out = Path(self.out_dir)
        with self.track_time():
            ids, texts, domains = self.pool(config)
            self.stat_update("pool", value=len(ids))
            if not ids:
                write_json_atomic(
                    out / "audit.json", {"pool_size": 0, "note": "no filter-required documents"}
                )
                write_json_atomic(out / "decision.json", {"prompt_version": None})
                return iter(())
            cache = LabelCache(self.cache_path)
            try:
                result = run_audit(config, ids, texts, domains, cache)
            finally:
                cache.close()
            write_json_atomic(out / "audit.json", result.record)
            if not result.record["target_reached"] and config.audit.on_target_missed == "stop":
                conf = result.record["confirmation"]
                raise AuditTargetMissed(
                    f"the QA audit's confirmed Cohen's kappa for prompt {result.chosen_version} is "
                    f"{conf['cohen_kappa']:.3f} with {config.audit.confidence:.0%} interval "
                    f"[{conf['kappa_interval'][0]:.3f}, {conf['kappa_interval'][1]:.3f}] on {conf['n']} "
                    f"pairs: its lower bound is below the target {config.audit.target_agreement}; see "
                    f"{out / 'audit.json'}, revise the prompt (a new file in audit.prompts_dir) or set "
                    "audit.on_target_missed"
                )
            decision = {"prompt_version": result.chosen_version, "cache_key": result.chosen_cache_key}
            write_json_atomic(out / "decision.json", decision)
        return iter(())


def read_decision(audit_dir: str) -> dict[str, Any]:
    folder = get_datafolder(audit_dir)
    if not folder.exists("decision.json"):
        raise UserError(f"{folder.path}/decision.json is missing: the audit stage did not complete; rerun")
    with folder.open("decision.json", "r") as handle:
        return json.load(handle)


def stratum_counts(domains: Sequence[str], labels: Sequence[int | None]) -> dict[str, int]:
    return dict(Counter(f"{d}/{LABEL_NAMES.get(lab, 'unlabelled')}" for d, lab in zip(domains, labels)))
