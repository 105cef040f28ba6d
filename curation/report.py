"""Step 8b, the report: documents and tokens kept per domain and per drop reason, the domain-distribution plot
(like the paper's Figure 1), and labelling / audit / classifier / dedup metrics (JSON + Markdown)."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from curation.config import CurationConfig
from curation.io_utils import atomic_write, read_json, write_json_atomic, write_text_atomic
from curation.stats import merge_all


def planted_duplicate_recall(
    planted: list[list[str]], survivors: set[str], duplicates: dict[str, str]
) -> dict[str, Any]:
    """A planted pair (original, copy) counts when both reached dedup; it is found when they share a root."""
    root = lambda x: duplicates.get(x, x)
    eligible = [(a, b) for a, b in planted if a in survivors and b in survivors]
    found = sum(root(a) == root(b) for a, b in eligible)
    return {
        "planted_pairs": len(planted),
        "reached_dedup": len(eligible),
        "found": found,
        "recall": found / len(eligible) if eligible else None,
    }


def plot_domain_distribution(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["tokens"] > 0]
    fig, ax = plt.subplots(figsize=(7, 7))
    if rows:
        colours = plt.get_cmap("tab20").colors
        wedges, _ = ax.pie(
            [r["tokens"] for r in rows],
            colors=colours[: len(rows)],
            startangle=90,
            counterclock=False,
            wedgeprops={"width": 0.45, "edgecolor": "white"},
        )
        ax.legend(
            wedges,
            [f"{r['domain']} ({r['token_share']:.1%})" for r in rows],
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            frameon=False,
        )
    ax.set_title("Domain distribution of the curated corpus (share of tokens)")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def build_report(config: CurationConfig, paths, results: dict[str, Any]) -> dict[str, Any]:
    from curation.writer import write_card

    ingest, clean, dedup = results["ingest"], results["clean"], results["dedup"]
    steps: dict[str, dict[str, int]] = {
        "input_validation": ingest["input_validation"],
        "domain_selection": ingest["domain_selection"],
    }
    for name in ("relevance", "language", "quality", "adult"):
        steps[name] = merge_all(name, (s["steps"][name] for s in clean)).as_dict()
    steps["dedup"] = dedup["stats"]
    drops = {
        step: {
            k.removeprefix("dropped_"): v
            for k, v in counts.items()
            if k.startswith("dropped_") and not k.endswith("_tokens")
        }
        for step, counts in steps.items()
    }
    route_of = {d: "filter" for d in results["classifiers"]}
    route_of.update({d: "direct" for d in config.domains.directly_selected})
    per_domain_drops: dict[str, Counter] = defaultdict(Counter)
    for shard in clean:
        for domain, counts in shard["per_domain"].items():
            per_domain_drops[domain].update({k: v for k, v in counts.items() if k.startswith("dropped_")})
    for domain, counts in dedup["per_domain"].items():
        per_domain_drops[domain].update({k: v for k, v in counts.items() if k.startswith("dropped_")})
    total_tokens = sum(c.get("kept_tokens", 0) for c in dedup["per_domain"].values()) or 1
    domains = sorted(
        (
            {
                "domain": d,
                "route": route_of.get(d, "filter"),
                "docs": c.get("kept", 0),
                "tokens": c.get("kept_tokens", 0),
                "token_share": c.get("kept_tokens", 0) / total_tokens,
                "dropped": {
                    k.removeprefix("dropped_"): v
                    for k, v in sorted(per_domain_drops[d].items())
                    if not k.endswith("_tokens")
                },
            }
            for d, c in dedup["per_domain"].items()
        ),
        key=lambda r: -r["tokens"],
    )
    validation = ingest["input_validation"]
    report: dict[str, Any] = {
        "totals": {
            "docs_in": sum(v for k, v in validation.items() if not k.endswith("_tokens")),
            "docs_out": results["dataset"]["rows"],
            "tokens_out": results["dataset"]["tokens"],
        },
        "steps": steps,
        "drops": drops,
        "domains": domains,
        "labelling": _without_cache_counts(results["labels"]),
        "classifiers": _classifier_summary(results["classifiers"]),
    }
    planted_file = paths.work / "demo_input" / "planted_duplicates.json"
    if planted_file.exists():
        import pyarrow.parquet as pq

        survivors = set()
        for s in range(config.input.num_shards):
            survivors |= set(
                pq.read_table(paths.work / "clean" / f"shard_{s:05d}.parquet", columns=["id"])
                .column("id")
                .to_pylist()
            )
        report["planted_duplicates"] = planted_duplicate_recall(
            read_json(planted_file), survivors, dedup["duplicates"]
        )
    paths.report.mkdir(parents=True, exist_ok=True)
    plot_domain_distribution(domains, paths.report / "domain_distribution.png")
    write_json_atomic(paths.report / "report.json", report)
    write_text_atomic(paths.report / "report.md", render_markdown(report))
    write_card(config, paths, report)
    return report


def _without_cache_counts(obj: Any) -> Any:
    """Cache hits depend on run history (a resumed run hits more), not on the data: keep them out of the
    report
    so an interrupted-and-resumed run reports exactly what an uninterrupted one does."""
    if isinstance(obj, dict):
        return {k: _without_cache_counts(v) for k, v in obj.items() if k != "cache_hits"}
    if isinstance(obj, list):
        return [_without_cache_counts(v) for v in obj]
    return obj


def _classifier_summary(classifiers: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "n_labelled",
        "n_relevant",
        "n_train",
        "n_heldout",
        "threshold",
        "threshold_reason",
        "heldout",
        "heldout_vs_truth",
        "cv_f1_mean",
        "cv_f1_sd",
        "note",
        "score_histogram",
    )
    return {d: {k: rec[k] for k in keys if k in rec} for d, rec in classifiers.items()}


def _fmt(x: Any) -> str:
    return "–" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def render_markdown(report: dict[str, Any]) -> str:
    t = report["totals"]
    out = [
        "# Curation report",
        "",
        f"Documents read: {t['docs_in']:,}; kept: {t['docs_out']:,}; tokens kept (whitespace words): "
        f"{t['tokens_out']:,}.",
        "",
        "![domain distribution](domain_distribution.png)",
        "",
        "## Per domain",
        "",
        "| domain | route | docs | tokens | share | drops |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in report["domains"]:
        drops = ", ".join(f"{k} {v}" for k, v in r["dropped"].items()) or "–"
        out.append(
            f"| {r['domain']} | {r['route']} | {r['docs']:,} | {r['tokens']:,} | {r['token_share']:.1%} | "
            f"{drops} |"
        )
    out += ["", "## Steps (kept / dropped per reason)", ""]
    for step, counts in report["steps"].items():
        out.append(
            f"- **{step}**: "
            + ", ".join(f"{k} {v:,}" for k, v in counts.items() if not k.endswith("_tokens"))
        )
    lab = report["labelling"]
    out += [
        "",
        "## Labelling and QA audit",
        "",
        f"Primary labeler `{lab['primary_labeler']}`, auditor `{lab['auditor_labeler']}`, chosen prompt "
        f"version **{lab['chosen_prompt_version']}**. Label outcomes: {lab['label_stats']}.",
        "",
        "| round | prompt | audited | agreement | Cohen's κ | confusion [[aud NR→ NR, R], [aud R→ NR, R]] |",
        "|---:|---|---:|---:|---:|---|",
    ]
    for k, rnd in enumerate(lab["rounds"], 1):
        o = rnd["overall"]
        out.append(
            f"| {k} | {rnd['prompt_version']} | {o['n']} | {_fmt(o['agreement'])} | {_fmt(o['cohen_kappa'])} "
            f"| {o['confusion']} |"
        )
    last = lab["rounds"][-1]
    out += ["", "Per-domain agreement in the last round:", ""]
    for domain, m in last["per_domain"].items():
        out.append(f"- {domain}: n={m['n']}, agreement {_fmt(m['agreement'])}, κ {_fmt(m['cohen_kappa'])}")
        for ex in last["disagreements"].get(domain, [])[:2]:
            out.append(
                f"  - disagreement `{ex['id']}` (primary {ex['primary']}, auditor {ex['auditor']}): "
                f"{ex['text'][:160]!r}"
            )
    out += [
        "",
        "## fastText classifiers (held-out, at the chosen threshold)",
        "",
        "| domain | labelled (relevant) | threshold (rule) | P | R | F1 | CV F1 | P vs truth | R vs truth |",
        "|---|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for domain, c in report["classifiers"].items():
        h, tr = c.get("heldout", {}), c.get("heldout_vs_truth", {})
        cv = (
            f"{_fmt(c.get('cv_f1_mean'))} ± {_fmt(c.get('cv_f1_sd'))}"
            if c.get("cv_f1_mean") is not None
            else "–"
        )
        out.append(
            f"| {domain} | {c['n_labelled']} ({c['n_relevant']}) | {_fmt(c['threshold'])} "
            f"({c.get('threshold_reason', c.get('note', ''))}) | {_fmt(h.get('precision'))} | "
            f"{_fmt(h.get('recall'))} | {_fmt(h.get('f1'))} | {cv} | {_fmt(tr.get('precision'))} | "
            f"{_fmt(tr.get('recall'))} |"
        )
    if "planted_duplicates" in report:
        p = report["planted_duplicates"]
        out += [
            "",
            "## Planted near-duplicates",
            "",
            f"{p['found']} of {p['reached_dedup']} planted pairs that reached dedup were found "
            f"(recall {_fmt(p['recall'])}; {p['planted_pairs']} planted in total).",
        ]
    return "\n".join(out) + "\n"
