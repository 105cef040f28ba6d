"""The curation config: YAML validated into documented dataclasses by the shared loader
(:mod:`rexbert_common.config`), so a bad value fails at load time, before anything is written.

Strings may use ``${REXBERT_DATA_DIR}``-style environment variables; they are expanded at load time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rexbert_common.config import ConfigError, checked, config_to_dict
from rexbert_common.config import config_from_dict as _from_dict
from rexbert_common.config import load_config as _load
from rexbert_common.executors import ExecutorConfig

__all__ = ["ConfigError", "CurationConfig", "config_from_dict", "config_to_dict", "load_config"]

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"
DEFAULT_PROMPTS = Path(__file__).parent / "prompts"

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
class SourceConfig:
    """One input.

    Args:
    path: a file or folder (local, ``s3://...``, or ``hf://datasets/<id>`` through the Hub's filesystem; for
        ``format: hf_dataset`` a dataset id or a local dataset folder for ``datasets.load_dataset``).
    format: ``jsonl`` (``.jsonl``/``.json``, optionally ``.gz``), ``parquet`` or ``hf_dataset``.
    domain_from: ``field`` (the record's ``domain_field``) or ``folder`` (the file's top-level folder under
        ``path``, as in FineFineWeb's per-domain folders).
    folders: read only these top-level folders (FineFineWeb: the selected domains); empty = every folder.
    text_field / domain_field / id_field: column names in the records. The record id (when present) is
        kept as ``source_id``; the document id is ``<file path>#<record index>``, unique per path.
    split: the split for ``hf_dataset``.
    """

    path: str = ""
    format: str = checked("jsonl", choices=("jsonl", "parquet", "hf_dataset"))
    domain_from: str = checked("field", choices=("field", "folder"))
    folders: list[str] = field(default_factory=list)
    text_field: str = "text"
    domain_field: str = "domain"
    id_field: str = "id"
    split: str = "train"

    def __post_init__(self):
        if not self.path:
            raise ValueError("every input.sources entry needs a path")


@dataclass
class InputConfig:
    """Args:
    sources: the inputs (see :class:`SourceConfig`).
    demo: build the offline FineFineWeb-style demo input from ``REXBERT_DATA_DIR`` into the work dir first.
    max_chars: longer documents are dropped (``dropped_too_long``) rather than choking later steps.
    expected_documents: an estimate of the documents read (e.g. 1.3e9 for FineFineWeb's 15 selected
        domains); used only to size the memory request of the one-task ``cluster`` stage (docs/curation.md,
        *Resources per stage*). 0: the small-run default.
    """

    sources: list[SourceConfig] = field(default_factory=list)
    demo: bool = False
    max_chars: int = checked(1_000_000, ge=1)
    expected_documents: float = checked(0, ge=0)


@dataclass
class DomainConfig:
    """Args:
    filter_required: domains whose documents are scored by a per-domain classifier (Table 1, left).
    directly_selected: domains kept whole (Table 1, right). Any other domain is dropped as not selected.
    """

    filter_required: list[str] = field(default_factory=lambda: list(TABLE1_FILTER_REQUIRED))
    directly_selected: list[str] = field(default_factory=lambda: list(TABLE1_DIRECTLY_SELECTED))

    def __post_init__(self):
        overlap = set(self.filter_required) & set(self.directly_selected)
        if overlap:
            raise ValueError(f"{sorted(overlap)} are both filter_required and directly_selected")


@dataclass
class SamplingConfig:
    """Args:
    per_domain: documents drawn from each filter-required domain for LLM labelling (paper: ~100k's). Each
        task keeps its ``per_domain`` smallest keys per domain, so memory is bounded by this, not the input.
    seed: the draw is a seeded hash of the document id: independent of input order and task count.
    """

    per_domain: int = checked(200, ge=1)
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
    chunks: zero-shot only: the ``max_chars`` prefix is cut into this many pieces whose margins are averaged.
    max_new_tokens: generation budget for chat models (the answer is one short phrase).
    min_coverage: the share of documents that must get a label; a label task (or the audit) below it stops
        with the counts, and its rerun asks again for exactly the missing ones. An answer that is not a label
        is an error for that document (retried, never cached), so a broken endpoint cannot pass as labels.
    """

    kind: str = checked("zero_shot", choices=("zero_shot", "http", "transformers"))
    model: str = ""
    endpoint: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    batch_size: int = checked(32, ge=1)
    max_retries: int = checked(4, ge=0)
    backoff_s: float = checked(1.0, ge=0)
    timeout_s: float = checked(60.0, gt=0)
    max_chars: int = checked(2000, ge=1)
    margin: float = 0.0
    chunks: int = checked(1, ge=1)
    max_new_tokens: int = checked(8, ge=1)
    min_coverage: float = checked(0.99, gt=0, le=1)


@dataclass
class AuditConfig:
    """The QA audit that gates the labels (``curation/audit.py`` describes the design).

    Args:
    labeler: the stronger model that re-labels the audited documents (paper: Llama-3-70B auditing Phi-4). It
        must be a different model: its weights hash (local models) or endpoint + served model (HTTP) must
        differ from the primary's.
    allow_same_model: run the audit even when the auditor is the primary's model (the offline demo has one
        encoder); the report then says the gate measured self-agreement and is not meaningful.
    pool_per_domain: documents per domain (smallest audit keys of the sample) that the primary labels with
        the first prompt version: the first labels that stratify the audit.
    subset_per_class: audited documents per (domain, first label) stratum, half to choose the prompt
        version, half to confirm it; the same documents in every round.
    min_per_stratum: a stratum with fewer pool documents stops the audit (one line naming it).
    min_pairs: the confirmation needs at least this many labelled pairs, else the audit stops.
    prompts_dir: folder of prompt files ``<version>.yaml`` (empty: the packaged ``curation/prompts``).
    prompt_versions: operational-definition versions tried in order, one audit round each; the round with
        the highest kappa on the selection half is kept.
    target_agreement: Cohen's kappa that the *lower bound* of the confirmed kappa's interval must reach.
    confidence / bootstrap: the interval's level and resamples (stratified percentile bootstrap).
    on_target_missed: ``stop`` (fail the stage with the per-round report) or ``continue`` (label with the
        chosen version and record that the target was missed).
    """

    labeler: LabelerConfig = field(default_factory=lambda: LabelerConfig(max_chars=4000))
    allow_same_model: bool = False
    pool_per_domain: int = checked(1000, ge=1)
    subset_per_class: int = checked(60, ge=2)
    min_per_stratum: int = checked(20, ge=1)
    min_pairs: int = checked(100, ge=1)
    prompts_dir: str = ""
    prompt_versions: list[str] = field(default_factory=lambda: ["v1", "v2"])
    target_agreement: float = checked(0.6, ge=-1, le=1)
    confidence: float = checked(0.95, gt=0, lt=1)
    bootstrap: int = checked(1000, ge=100)
    on_target_missed: str = checked("stop", choices=("stop", "continue"))

    def __post_init__(self):
        if not self.prompt_versions:
            raise ValueError("audit.prompt_versions is empty")


@dataclass
class ClassifierConfig:
    """Args:
    epochs / lr / word_ngrams / dim / min_count / bucket: fastText supervised hyper-parameters.
    heldout_fraction: share of labelled docs never used for training, calibration or the threshold; the
        reported metrics come from it.
    kfold: out-of-fold scores on the training part: the calibrator and the threshold are fit on those.
    calibration: ``isotonic`` or ``platt`` (scikit-learn) mapping of fastText scores to probabilities.
    threshold_rule: ``target_precision`` (lowest threshold whose out-of-fold precision >= target_precision;
        max F1 when none reaches it) or ``max_f1``.
    seed: fastText runs single-threaded so that training is exactly reproducible.
    """

    epochs: int = checked(25, ge=1)
    lr: float = checked(0.5, gt=0)
    word_ngrams: int = checked(2, ge=1)
    dim: int = checked(50, ge=1)
    min_count: int = checked(1, ge=1)
    bucket: int = checked(200_000, ge=1)
    heldout_fraction: float = checked(0.2, gt=0, lt=1)
    kfold: int = checked(5, ge=2)
    calibration: str = checked("isotonic", choices=("isotonic", "platt"))
    threshold_rule: str = checked("target_precision", choices=("target_precision", "max_f1"))
    target_precision: float = checked(0.9, gt=0, le=1)
    seed: int = 0


@dataclass
class LidConfig:
    """Args:
    model_path: fastText lid.176 model (.ftz/.bin).
        Empty: ``${REXBERT_DATA_DIR}/fasttext_lid176/lid.176.ftz``.
    languages: languages to keep; threshold: minimum probability (datatrove's default 0.65).
    """

    model_path: str = ""
    languages: list[str] = field(default_factory=lambda: ["en"])
    threshold: float = checked(0.65, ge=0, le=1)


@dataclass
class QualityConfig:
    """Gopher / C4 / FineWeb heuristics; thresholds default to the published (and datatrove) values.

    Product pages are short and list-like, so a commerce run may relax ``min_doc_words`` and the line ratios.
    Set a field to null to disable that rule. ``tokenizer``: ``regex`` (a compiled emulation of spaCy's
    English tokenizer), ``spacy`` (datatrove's word splitter: identical decisions, slow) or ``hybrid``
    (regex, re-checked with spaCy whenever a statistic is near its threshold: datatrove's decisions, faster).
    """

    tokenizer: str = checked("hybrid", choices=("regex", "spacy", "hybrid"))
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
class BoilerplateConfig:
    """Line-level removal of navigation, cookie/consent, newsletter, share and advertising lines.

    Args:
    enabled: on by default (paper §3: boilerplate and ads removed before relevance filtering).
    extra_patterns: more regular expressions; a line matching any pattern (case-insensitive) is removed.
    max_line_words: only lines up to this many words are candidates (boilerplate is short).
    """

    enabled: bool = True
    extra_patterns: list[str] = field(default_factory=list)
    max_line_words: int = checked(25, ge=1)


@dataclass
class AdultConfig:
    """Args:
    url_filter: datatrove's URLFilter with its shipped blocklists (UT1 adult domains, banned URL words).
    extra_domains: more blocked domains for the URL filter.
    word_list: path to extra words (one per line) added to the built-in explicit-term list.
    max_word_ratio: drop a document when explicit words exceed this share of its words...
    min_word_hits: ... and occur at least this many times (a single incidental word is not enough).
    """

    url_filter: bool = True
    extra_domains: list[str] = field(default_factory=list)
    word_list: str = ""
    max_word_ratio: float = checked(0.005, ge=0)
    min_word_hits: int = checked(3, ge=1)


@dataclass
class DedupConfig:
    """Global MinHash near-duplicate removal with datatrove's bucketed stages.

    Args:
    n_grams: word shingle size. buckets x hashes_per_bucket: LSH bands x rows. FineWeb's 14 x 8 finds a pair
        at Jaccard 0.8 with probability 1-(1-0.8**8)**14 = 0.92 and one at 0.5 with 0.05.
    seed: permutation seed; identical on every task.
    """

    enabled: bool = True
    n_grams: int = checked(5, ge=1)
    buckets: int = checked(14, ge=1)
    hashes_per_bucket: int = checked(8, ge=1)
    seed: int = 1


@dataclass
class CleaningConfig:
    lid: LidConfig = field(default_factory=LidConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    boilerplate: BoilerplateConfig = field(default_factory=BoilerplateConfig)
    adult: AdultConfig = field(default_factory=AdultConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)


@dataclass
class OutputConfig:
    """Args:
    dir: everything goes here: ``work/`` (resumable stage outputs), ``dataset/`` (HF parquet + card),
        ``report/``. On Slurm / Ray it must be on a filesystem every node sees.
    dataset_name / license: shown in the dataset card.
    """

    dir: str = "outputs/curation"
    dataset_name: str = "ecom-niverse"
    license: str = "odc-by"


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

    def __post_init__(self):
        if not self.input.sources and not self.input.demo:
            raise ValueError("input.sources is empty and input.demo is false: nothing to curate")
        if config_to_dict(self.labeler) == config_to_dict(self.audit.labeler):
            raise ValueError(
                "audit.labeler is the primary labeler: an audit by the same model measures nothing"
            )

    def resolved_lid_path(self) -> Path:
        if self.cleaning.lid.model_path:
            return Path(self.cleaning.lid.model_path)
        root = os.environ.get("REXBERT_DATA_DIR", "")
        if not root:
            raise ConfigError(
                "cleaning.lid.model_path is empty and REXBERT_DATA_DIR is unset: cannot find lid.176"
            )
        return Path(root) / "fasttext_lid176" / "lid.176.ftz"

    def prompts_dir(self) -> Path:
        return Path(self.audit.prompts_dir) if self.audit.prompts_dir else DEFAULT_PROMPTS


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> CurationConfig:
    return _from_dict(CurationConfig, data, source)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> CurationConfig:
    """Load a YAML config (default: the packaged ``configs/default.yaml``) with ``key=value`` overrides."""
    return _load(path or DEFAULT_CONFIG, CurationConfig, overrides)
