"""The curation config: YAML validated into dataclasses (every field documented, unknown keys rejected).

Strings may use ``${REXBERT_DATA_DIR}``-style environment variables; they are expanded at load time.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Paper Table 1: FineFineWeb domains that need filtering vs. domains taken (almost) whole.
TABLE1_FILTER_REQUIRED = (
    "hobby",
    "news",
    "health",
    "entertainment",
    "travel",
    "food",
    "automotive",
    "sports",
    "music_and_dance",
)
TABLE1_DIRECTLY_SELECTED = ("fashion", "beauty", "celebrity", "movie", "photo", "painting")


@dataclass
class InputConfig:
    """Args:
    sources: files/folders (.jsonl[.gz], .parquet) or ``hf://<dataset id>`` streams with text + domain.
    demo: build the offline FineFineWeb-style demo input from ``REXBERT_DATA_DIR`` into the work dir first.
    text_field / domain_field: column names in the sources.
    max_chars: longer documents are dropped (``dropped_too_long``) rather than choking later steps.
    num_shards: documents are spread over this many shards (the unit of parallel work and of resumption).
    """

    sources: list[str] = field(default_factory=list)
    demo: bool = False
    text_field: str = "text"
    domain_field: str = "domain"
    max_chars: int = 1_000_000
    num_shards: int = 8


@dataclass
class DomainConfig:
    """Args:
    filter_required: domains whose documents are scored by a per-domain classifier (Table 1, left).
    directly_selected: domains kept whole (Table 1, right). Any other domain is dropped as not selected.
    """

    filter_required: list[str] = field(default_factory=lambda: list(TABLE1_FILTER_REQUIRED))
    directly_selected: list[str] = field(default_factory=lambda: list(TABLE1_DIRECTLY_SELECTED))


@dataclass
class SamplingConfig:
    """Args:
    per_domain: documents drawn from each filter-required domain for LLM labelling (paper: ~100k's).
    seed: the draw is a seeded hash of the document id, so it does not depend on input order or sharding.
    """

    per_domain: int = 200
    seed: int = 0


@dataclass
class LabelerConfig:
    """Args:
    kind: ``zero_shot`` (sentence-transformers encoder, offline), ``http`` (OpenAI-compatible endpoint such as
        vLLM/TGI), or ``transformers`` (local chat model, e.g. microsoft/phi-4).
    model: model id or path; for ``zero_shot`` empty means the bundled all-MiniLM-L6-v2.
    endpoint: base URL for ``http`` (``.../v1``); api_key_env names the variable holding the key.
    batch_size: documents per encoder batch / concurrent HTTP requests.
    max_retries / backoff_s / timeout_s: HTTP retry policy (exponential back-off: backoff_s * 2**attempt).
    max_chars: document prefix shown to the labeler.
    margin: zero-shot decision margin between relevant and not-relevant prototype similarity.
    chunks: zero-shot only: the ``max_chars`` prefix is cut into this many pieces whose margins are averaged
        (a "stronger" offline auditor reads more of each document than the encoder's 256-token window).
    max_new_tokens: generation budget for chat models (the answer is one short phrase).
    """

    kind: str = "zero_shot"
    model: str = ""
    endpoint: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    batch_size: int = 32
    max_retries: int = 4
    backoff_s: float = 1.0
    timeout_s: float = 60.0
    max_chars: int = 2000
    margin: float = 0.0
    chunks: int = 1
    max_new_tokens: int = 8


@dataclass
class AuditConfig:
    """Args:
    labeler: the stronger model that re-labels the audit subset (paper: Llama-3-70B auditing Phi-4).
    subset_per_class: audited documents per (domain, primary label) stratum.
    prompt_versions: operational-definition versions tried in order (see curation/relevance.py).
    target_agreement: stop when primary/auditor agreement reaches this.
    min_improvement: or when a revised prompt improves agreement by less than this (it has stabilised).
    """

    labeler: LabelerConfig = field(default_factory=lambda: LabelerConfig(max_chars=4000))
    subset_per_class: int = 15
    prompt_versions: list[str] = field(default_factory=lambda: ["v1", "v2"])
    target_agreement: float = 0.9
    min_improvement: float = 0.01


@dataclass
class ClassifierConfig:
    """Args:
    epochs / lr / word_ngrams / dim / min_count: fastText supervised hyper-parameters.
    bucket: hash buckets for word n-grams (fastText's default 2M allocates 2M x dim floats per model; a
        per-domain relevance model on thousands of labels needs far fewer).
    heldout_fraction: share of labelled docs kept out of training for validation and calibration.
    kfold: cross-validation folds on the training part (reported as mean +- sd F1).
    threshold_rule: ``target_precision`` (lowest threshold whose held-out precision >= target_precision; fall
        back to max F1 when none reaches it) or ``max_f1``.
    seed: fastText runs single-threaded so that training is exactly reproducible (resumption relies on it).
    """

    epochs: int = 25
    lr: float = 0.5
    word_ngrams: int = 2
    dim: int = 50
    min_count: int = 1
    bucket: int = 200_000
    heldout_fraction: float = 0.2
    kfold: int = 5
    threshold_rule: str = "target_precision"
    target_precision: float = 0.9
    seed: int = 0


@dataclass
class LidConfig:
    """Args:
    model_path: fastText lid.176 model (.ftz/.bin). Empty:
    ``${REXBERT_DATA_DIR}/fasttext_lid176/lid.176.ftz``.
    languages: languages to keep; threshold: minimum probability (datatrove's default 0.65).
    """

    model_path: str = ""
    languages: list[str] = field(default_factory=lambda: ["en"])
    threshold: float = 0.65


@dataclass
class QualityConfig:
    """Gopher / C4 / FineWeb heuristics; thresholds default to the published (and datatrove) values.

    Product pages are short and list-like, so a commerce run may relax ``min_doc_words`` and the line ratios.
    Set a field to null to disable that rule. ``tokenizer``: ``regex`` (a compiled emulation of spaCy's
    English tokenizer, fast, ~1-3% of decisions differ from datatrove's), ``spacy`` (datatrove's word
    splitter:
    identical decisions, slow) or ``hybrid`` (regex, re-checked with spaCy whenever a token statistic is near
    its threshold or the text has constructs where the two tokenizers diverge: datatrove's decisions, faster).
    """

    tokenizer: str = "hybrid"
    gopher: bool = True
    min_doc_words: int | None = 50
    max_doc_words: int | None = 100_000
    min_avg_word_length: float | None = 3
    max_avg_word_length: float | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    max_non_alpha_words_ratio: float | None = 0.8
    min_stop_words: int | None = 2
    c4: bool = True
    c4_lorem_ipsum: bool = True
    c4_curly_bracket: bool = True
    fineweb: bool = True
    line_punct_thr: float | None = 0.12
    short_line_thr: float | None = 0.67
    short_line_length: int = 30
    char_duplicates_ratio: float | None = 0.01
    new_line_ratio: float | None = 0.3


@dataclass
class AdultConfig:
    """Args:
    word_list: path to extra words (one per line) added to the built-in adult/profanity list.
    max_word_ratio: drop a document when blocked words exceed this share of its words.
    min_word_hits: ... and at least this many occurrences (a single incidental word is not enough).
    url_blocklist: domains (and their subdomains) whose pages are dropped; extends the built-in list.
    """

    word_list: str = ""
    max_word_ratio: float = 0.005
    min_word_hits: int = 3
    url_blocklist: list[str] = field(default_factory=list)


@dataclass
class DedupConfig:
    """MinHash-LSH near-duplicate removal (datasketch).

    Args:
    n_grams: word shingle size (datatrove uses 5).
    bands / rows: LSH bands x rows per band = number of permutations. 20 x 5 finds a pair at Jaccard 0.8 with
        probability 1-(1-0.8**5)**20 = 0.9997 (datatrove's 14 x 8 gives 0.92).
    seed: permutation seed; identical on every worker.
    """

    enabled: bool = True
    n_grams: int = 5
    bands: int = 20
    rows: int = 5
    seed: int = 1


@dataclass
class CleaningConfig:
    lid: LidConfig = field(default_factory=LidConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    adult: AdultConfig = field(default_factory=AdultConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)


@dataclass
class ExecutorConfig:
    """Args:
    kind: ``local`` (datatrove LocalPipelineExecutor), ``slurm`` or ``ray`` (datatrove's executors).
    workers: parallel tasks; -1 = one per CPU core.
    slurm: extra SlurmPipelineExecutor arguments (partition, time, cpus_per_task, mem_per_cpu_gb, ...).
    ray: extra RayPipelineExecutor arguments.
    """

    kind: str = "local"
    workers: int = -1
    slurm: dict[str, Any] = field(default_factory=dict)
    ray: dict[str, Any] = field(default_factory=dict)


@dataclass
class OutputConfig:
    """Args:
    dir: everything goes here: ``work/`` (resumable intermediates), ``dataset/`` (HF parquet shards + card),
        ``report/`` (stats, metrics, plot).
    docs_per_shard: rows per output parquet shard.
    dataset_name: name used in the dataset card.
    """

    dir: str = "outputs/curation"
    docs_per_shard: int = 50_000
    dataset_name: str = "ecom-niverse"


@dataclass
class CurationConfig:
    input: InputConfig = field(default_factory=InputConfig)
    domains: DomainConfig = field(default_factory=DomainConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    labeler: LabelerConfig = field(default_factory=LabelerConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    cleaning: CleaningConfig = field(default_factory=CleaningConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def validate(self) -> CurationConfig:
        overlap = set(self.domains.filter_required) & set(self.domains.directly_selected)
        _check(not overlap, "domains", f"{sorted(overlap)} are both filter_required and directly_selected")
        for name in ("labeler", "audit.labeler"):
            kind = self.labeler.kind if name == "labeler" else self.audit.labeler.kind
            _check(
                kind in ("zero_shot", "http", "transformers"),
                f"{name}.kind",
                f"{kind!r} is not one of zero_shot, http, transformers",
            )
        _check(
            self.classifier.threshold_rule in ("target_precision", "max_f1"),
            "classifier.threshold_rule",
            repr(self.classifier.threshold_rule),
        )
        _check(
            0 < self.classifier.heldout_fraction < 1,
            "classifier.heldout_fraction",
            str(self.classifier.heldout_fraction),
        )
        _check(self.classifier.kfold >= 2, "classifier.kfold", str(self.classifier.kfold))
        _check(self.executor.kind in ("local", "slurm", "ray"), "executor.kind", repr(self.executor.kind))
        _check(self.input.num_shards >= 1, "input.num_shards", str(self.input.num_shards))
        _check(
            self.cleaning.dedup.bands >= 1 and self.cleaning.dedup.rows >= 1,
            "cleaning.dedup",
            "bands and rows must be >= 1",
        )
        _check(bool(self.input.sources) or self.input.demo, "input.sources", "no sources and demo is false")
        _check(bool(self.audit.prompt_versions), "audit.prompt_versions", "empty")
        return self

    def resolved_lid_path(self) -> Path:
        if self.cleaning.lid.model_path:
            return Path(self.cleaning.lid.model_path)
        root = os.environ.get("REXBERT_DATA_DIR", "")
        if not root:
            raise ValueError(
                "cleaning.lid.model_path is empty and REXBERT_DATA_DIR is unset: cannot find lid.176"
            )
        return Path(root) / "fasttext_lid176" / "lid.176.ftz"


class ConfigError(ValueError):
    pass


def _check(ok: bool, where: str, what: str) -> None:
    if not ok:
        raise ConfigError(f"curation config field {where}: {what}")


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"curation config field {where or '<root>'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"curation config field {where or '<root>'}: unknown key(s) {sorted(unknown)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        sub = f"{where}.{key}" if where else key
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, sub)
        else:
            kwargs[key] = _expand(value)
    return cls(**kwargs)


def _expand(value: Any) -> Any:
    if isinstance(value, str):
        return os.path.expandvars(value)
    if isinstance(value, list):
        return [_expand(v) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    return value


def config_from_dict(data: dict[str, Any]) -> CurationConfig:
    return _build(CurationConfig, data, "").validate()


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> CurationConfig:
    """Load a YAML config (default: the embedded ``configs/default.yaml``), apply dotted-key overrides."""
    import yaml

    path = Path(path) if path else Path(__file__).parent / "configs" / "default.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"curation config {path} not found")
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config_from_dict(data)


def config_to_dict(config: CurationConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)
