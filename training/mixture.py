"""Weighted, temperature-scaled mixture of sources with a domain share annealed over a phase.

Two groups: *general* and *domain*. The phase's schedule ``domain_share(progress)`` (from
``domain_start`` to ``domain_end``) is the share of *tokens* from the domain group: the phase builder
picks the group whose token share lags the schedule (documents differ 100× in length, so a per-document
coin would let a few long web pages swamp short product records). Inside a group, likewise, a source's
``weight ** (1 / temperature)`` (normalised) is its share of the group's *tokens*: the next document comes
from the source furthest behind its share. (Drawn per document, ESCI's long product pages at weight 0.5
took 87% of the demo's product tokens and Icecat's short records 13%, for weights meant as 2 : 1.)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from training.data import LoadedSource
from training.recipe import MixtureConfig


def temperature_weights(weights: Sequence[float], temperature: float) -> np.ndarray:
    """``w ** (1/T)`` normalised (T = 1: proportional, T → ∞: uniform)."""
    w = np.asarray(weights, dtype=np.float64) ** (1.0 / temperature)
    return w / w.sum()


def domain_share(mixture: MixtureConfig, progress: float) -> float:
    """Share of domain documents at ``progress`` ∈ [0, 1] of the phase."""
    p = min(1.0, max(0.0, progress))
    start, end = mixture.domain_start, mixture.domain_end
    if mixture.schedule == "linear":
        t = p
    elif mixture.schedule == "cosine":
        t = 0.5 - 0.5 * math.cos(math.pi * p)
    else:  # step
        t = float(p >= 0.5)
    return start + (end - start) * t


def cumulative_domain_share(mixture: MixtureConfig, progress: float, points: int = 64) -> float:
    """∫₀^progress domain_share(q) dq: the domain tokens due by ``progress`` (as a share of the phase)."""
    p = min(1.0, max(0.0, progress))
    qs = np.linspace(0.0, p, points)
    values = np.array([domain_share(mixture, q) for q in qs])
    return float(((values[1:] + values[:-1]) / 2 * np.diff(qs)).sum())


@dataclass
class MixedDoc:
    text: str
    source: str
    is_domain: bool


class MixtureSampler:
    """Draws documents from the general and domain groups.

    Args:
        general / domain: loaded sources of each group (a group may be empty if never sampled).
        mixture: the phase's domain-share schedule.
        temperature: source-weight temperature inside each group.
        seed: sampler seed (group choice and per-source shuffles).
        doc_tokens: ``(text, is_domain) -> tokens`` a document will contribute (estimated; default its
            characters): sources are balanced on it.
    """

    def __init__(
        self,
        general: Sequence[LoadedSource],
        domain: Sequence[LoadedSource],
        mixture: MixtureConfig,
        temperature: float,
        seed: int,
        doc_tokens: Callable[[str, bool], float] | None = None,
    ) -> None:
        self.rng = np.random.default_rng(seed)
        self.doc_tokens = doc_tokens or (lambda text, is_domain: float(len(text)))
        self.mixture = mixture
        self.groups = {False: list(general), True: list(domain)}
        self.probs = {
            k: temperature_weights([s.config.weight for s in v], temperature) if v else None
            for k, v in self.groups.items()
        }
        self.streams = {
            k: [s.cycle(np.random.default_rng([seed, int(k), i])) for i, s in enumerate(v)]
            for k, v in self.groups.items()
        }
        self.counts: Counter[str] = Counter()
        self.tokens = {k: np.zeros(len(v)) for k, v in self.groups.items()}  # drawn per source

    def sample(self, progress: float) -> MixedDoc:
        """A document whose group is drawn with the scheduled domain share (a per-document share)."""
        share = domain_share(self.mixture, progress)
        return self.sample_group(bool(self.rng.random() < share))

    def sample_group(self, is_domain: bool) -> MixedDoc:
        """A document from the given group (the other one if that group has no source): from the source
        whose token share lags its weight the most (ties: the first)."""
        if not self.groups[is_domain]:
            is_domain = not is_domain
        drawn = self.tokens[is_domain]
        index = int(np.argmax(self.probs[is_domain] * drawn.sum() - drawn))
        source = self.groups[is_domain][index]
        self.counts[source.config.name] += 1
        text = next(self.streams[is_domain][index])
        drawn[index] += self.doc_tokens(text, is_domain)
        return MixedDoc(text, source.config.name, is_domain)

    def iterate(self, progress_fn) -> Iterator[MixedDoc]:
        """Endless documents; ``progress_fn()`` gives the phase progress at each draw."""
        while True:
            yield self.sample(progress_fn())
