"""The cleaning and selection steps as datatrove filters.

Every filter records its drop reasons in datatrove's stats (``dropped_<reason>``, as ``BaseFilter`` does)
and, through :class:`DomainFilter`, the same counts per domain (``<domain>/forwarded``,
``<domain>/dropped_<reason>``): the report is built from these merged stats, never by re-reading text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.filters.url_filter import URLFilter

from curation.config import AdultConfig, BoilerplateConfig, DomainConfig, LidConfig, QualityConfig

FILTER, DIRECT = "filter", "direct"
Verdict = bool | tuple[bool, str]


def normalise_domain(name: str) -> str:
    """'Music & Dance' -> 'music_and_dance' so configs, folders and FineFineWeb labels compare equal."""
    return "_".join(name.strip().lower().replace("&", " and ").replace("-", " ").split())


class DomainFilter(BaseFilter):
    """A filter that also counts its verdicts per domain; subclasses implement ``judge_batch``."""

    def judge_batch(self, batch: list[Document]) -> list[Verdict]:
        return [self.judge(doc) for doc in batch]

    def judge(self, doc: Document) -> Verdict:
        raise NotImplementedError

    def filter_batch(self, batch: list[Document]) -> list[Verdict]:
        verdicts = self.judge_batch(batch)
        for doc, verdict in zip(batch, verdicts):
            domain = doc.metadata.get("domain", "")
            if verdict is True:
                self.stat_update(f"{domain}/forwarded")
            else:
                self.stat_update(
                    f"{domain}/dropped_{verdict[1] if isinstance(verdict, tuple) else 'filtered'}"
                )
        return verdicts

    def filter(self, doc: Document) -> Verdict:
        return self.filter_batch([doc])[0]


class DomainRouter(DomainFilter):
    """Paper Table 1: ``route`` = filter (scored by the domain's classifier) / direct (kept whole); every
    other domain is dropped as ``domain_not_selected``."""

    name = "🗂 rexbert domain selection"

    def __init__(self, config: DomainConfig):
        super().__init__()
        self.filter_required = {normalise_domain(d) for d in config.filter_required}
        self.directly_selected = {normalise_domain(d) for d in config.directly_selected}

    def judge(self, doc: Document) -> Verdict:
        doc.metadata["domain"] = domain = normalise_domain(doc.metadata["domain"])
        if domain in self.filter_required:
            doc.metadata["route"] = FILTER
        elif domain in self.directly_selected:
            doc.metadata["route"] = DIRECT
        else:
            return False, "domain_not_selected"
        return True


class LanguageFilter(DomainFilter):
    """fastText lid.176, batched (one C++ call per batch); keeps ``language`` / ``language_score``."""

    name = "🌍 rexbert language ID"

    def __init__(self, config: LidConfig, model_path: str, batch_size: int = 256):
        super().__init__(batch_size=batch_size)
        self.config = config
        self.model_path = model_path
        self._lid = None

    def judge_batch(self, batch: list[Document]) -> list[Verdict]:
        from curation.cleaning.lid import LanguageId

        if self._lid is None:  # loaded in the worker, not pickled with the step
            self._lid = LanguageId(self.model_path, self.config.languages, self.config.threshold)
        out: list[Verdict] = []
        for doc, (kept, lang, score) in zip(batch, self._lid.predict([d.text for d in batch])):
            doc.metadata["language"], doc.metadata["language_score"] = lang, round(score, 4)
            out.append(True if kept else (False, "language"))
        return out


class QualityFilter(DomainFilter):
    """Gopher + C4 + FineWeb heuristics in one pass (reasons named as datatrove names them)."""

    name = "🥇 rexbert quality"

    def __init__(self, config: QualityConfig):
        super().__init__()
        from curation.cleaning.quality import QualityFilter as Heuristics

        self.heuristics = Heuristics(config)

    def judge(self, doc: Document) -> Verdict:
        reason, text = self.heuristics.check(doc.text)
        if reason:
            return False, reason
        doc.text = text
        return True


class BoilerplateFilter(DomainFilter):
    """Removes boilerplate / ad lines; a document left empty is dropped as ``boilerplate_only``."""

    name = "🧹 rexbert boilerplate + ads"

    def __init__(self, config: BoilerplateConfig):
        super().__init__()
        from curation.cleaning.boilerplate import BoilerplateRemover

        self.remover = BoilerplateRemover(config.extra_patterns, config.max_line_words)

    def judge(self, doc: Document) -> Verdict:
        text, removed = self.remover.clean(doc.text)
        doc.metadata["boilerplate_lines"] = removed
        if removed:
            self.stat_update("boilerplate_lines_removed", value=removed)
            self.stat_update("boilerplate_chars_removed", value=len(doc.text) - len(text))
        doc.text = text
        return True if text else (False, "boilerplate_only")


class OfflineURLFilter(URLFilter):
    """datatrove's URL filter (UT1 adult blocklist shipped with datatrove, banned URL words) with the public
    suffix list bundled in tldextract: workers on a cluster need no internet access."""

    def __init__(self, extra_domains=()):
        super().__init__(extra_domains=list(extra_domains) or None)
        from tldextract import TLDExtract

        self.tldextractor = TLDExtract(suffix_list_urls=())


class AdultFilter(DomainFilter):
    """URL blocklist (datatrove) for documents with a URL, then explicit-term density on the text."""

    name = "🔞 rexbert adult"

    def __init__(self, config: AdultConfig):
        super().__init__()
        from curation.cleaning.adult import AdultWords

        self.urls = OfflineURLFilter(config.extra_domains) if config.url_filter else None
        self.words = AdultWords(config)

    def judge(self, doc: Document) -> Verdict:
        if self.urls is not None and doc.metadata.get("url"):
            verdict = self.urls.filter(doc)
            if verdict is not True:
                return False, f"adult_url_{verdict[1] if isinstance(verdict, tuple) else 'blocked'}"
        reason = self.words.check(doc.text)
        return (False, reason) if reason else True


class _Loaded:
    """Models loaded by a running step. Deliberately not a dict or dataclass: datatrove's executor writes its
    pipeline to ``executor.json`` and would try to deep-copy (and fail on) anything it can walk into."""

    def __init__(self):
        self.models: dict[str, Any] = {}

    def __str__(self) -> str:
        return f"<{len(self.models)} loaded models>"


class RelevanceFilter(DomainFilter):
    """Filter-required domains: keep a document when its domain classifier's calibrated score reaches the
    domain threshold. Directly selected domains pass untouched."""

    name = "🛒 rexbert relevance"

    def __init__(self, classifier_dir: str, batch_size: int = 512):
        super().__init__(batch_size=batch_size)
        self.classifier_dir = classifier_dir
        self._loaded = _Loaded()

    def _classifier(self, domain: str):
        from curation.classifier import DomainClassifier

        cache = self._loaded.models
        if domain not in cache:
            exists = (Path(self.classifier_dir) / f"{domain}.json").exists()
            cache[domain] = DomainClassifier.load(self.classifier_dir, domain) if exists else None
        return cache[domain]

    def judge_batch(self, batch: list[Document]) -> list[Verdict]:
        from curation.classifier import passes

        out: list[Verdict] = [True] * len(batch)
        by_domain: dict[str, list[int]] = {}
        for i, doc in enumerate(batch):
            if doc.metadata.get("route") == FILTER:
                by_domain.setdefault(doc.metadata["domain"], []).append(i)
        for domain, idx in by_domain.items():
            clf = self._classifier(domain)
            if clf is None:
                for i in idx:
                    out[i] = (False, "no_classifier")
                continue
            scores = clf.scores([batch[i].text for i in idx])
            for i, score, kept in zip(idx, scores, passes(scores, clf.threshold)):
                batch[i].metadata["relevance_score"] = round(float(score), 6)
                if not kept:
                    out[i] = (False, "below_threshold")
        return out
