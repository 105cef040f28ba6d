"""Weighted, temperature-scaled mixture of sources with a domain share annealed over a phase, planned per
shard in closed form.

Two groups: *general* and *domain*. The phase's schedule ``domain_share(progress)`` (from ``domain_start``
to ``domain_end``) is the share of *tokens* from the domain group, and inside a group a source's normalised
``weight ** (1 / temperature)`` is its share of the group's tokens (documents differ 100× in length: drawn
per document, ESCI's long product pages at weight 0.5 took 87% of the demo's product tokens for weights
meant as 2 : 1). So source ``s`` is due ``E_s(x) = tokens · w_s · ∫₀ˣ share`` tokens by progress ``x``
(its group's share), and -- with ``μ_s`` its mean tokens per document, measured on a bounded sample -- the
first ``⌊E_s(x) / μ_s⌋`` of its draw positions (``source_index.DrawOrder``).

A shard covers ``[k·Δ, (k+1)·Δ)`` of the phase's progress, so its range of positions in every source is
known without reading any document or any other shard: shards are built independently, by any number of
tasks, and the rows do not depend on how the shards are split. Inside a shard each source's documents are
spread evenly over the shard's progress range and merged by that progress, so the annealing holds inside a
shard too. Token shares hold in expectation (the mean of ``μ_s`` over a source's documents); the realised
shares are measured on the real tokens and reported.

This replaces a sequential controller that predicted every document's tokens before choosing the next one:
exact, but one process had to read every document of the phase in order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from training.recipe import MixtureConfig

SHARDS_PER_PHASE = 8  # a phase has at least this many shards (small phases still split into parallel work)
SHARD_MARGIN = 0.05  # planned shards expect this much more than the phase's tokens (mean sizes are estimates)


def temperature_weights(weights: Sequence[float], temperature: float) -> np.ndarray:
    """``w ** (1/T)`` normalised (T = 1: proportional, T → ∞: uniform)."""
    w = np.asarray(weights, dtype=np.float64) ** (1.0 / temperature)
    return w / w.sum()


def domain_share(mixture: MixtureConfig, progress: float) -> float:
    """Share of domain tokens at ``progress`` ∈ [0, 1] of the phase (past the end: the end value)."""
    p = min(1.0, max(0.0, progress))
    start, end = mixture.domain_start, mixture.domain_end
    if mixture.schedule == "linear":
        t = p
    elif mixture.schedule == "cosine":
        t = 0.5 - 0.5 * math.cos(math.pi * p)
    else:  # step
        t = float(p >= 0.5)
    return start + (end - start) * t


def cumulative_domain_share(mixture: MixtureConfig, progress: float) -> float:
    """∫₀^progress domain_share(q) dq, exactly (monotone in ``progress``; past 1 the end share goes on)."""
    p = min(1.0, max(0.0, progress))
    start, end = mixture.domain_start, mixture.domain_end
    if mixture.schedule == "linear":
        ramp = p * p / 2
    elif mixture.schedule == "cosine":
        ramp = p / 2 - math.sin(math.pi * p) / (2 * math.pi)
    else:  # step
        ramp = max(0.0, p - 0.5)
    return start * p + (end - start) * ramp + max(0.0, progress - 1.0) * end


@dataclass(frozen=True)
class PlannedSource:
    """One source of the plan: its group, its share of that group and its mean tokens per position."""

    name: str
    is_domain: bool
    weight: float  # normalised within the group (temperature applied)
    mean_tokens: float


@dataclass(frozen=True)
class ShardRange:
    """Positions ``start`` .. ``stop - 1`` of a source's draw order that a shard takes."""

    source: int
    start: int
    stop: int


class MixturePlan:
    """Which documents of which source every shard of a phase takes (see the module docstring).

    Args:
        sources: general and domain sources, in recipe order (their order seeds their draw orders).
        mixture: the phase's domain-share schedule.  tokens: the phase's budget.
        shard_documents: documents a shard aims at (``shard_buffers × buffer_docs``); a phase has at
            least ``SHARDS_PER_PHASE`` shards.
    """

    def __init__(
        self, sources: Sequence[PlannedSource], mixture: MixtureConfig, tokens: int, shard_documents: int
    ) -> None:
        self.sources, self.mixture, self.tokens = list(sources), mixture, float(tokens)
        groups = {s.is_domain for s in self.sources}
        self.only = groups.pop() if len(groups) == 1 else None  # a lone group takes every token
        documents = sum(self.due(s, 1.0) / self.sources[s].mean_tokens for s in range(len(self.sources)))
        self.width = min(1.0 / SHARDS_PER_PHASE, shard_documents / max(documents, 1.0))
        self.shards = math.ceil((1.0 + SHARD_MARGIN) / self.width - 1e-9)

    def due(self, source: int, progress: float) -> float:
        """Tokens source ``source`` is due by ``progress`` (may exceed 1: shards past the planned end)."""
        s = self.sources[source]
        if self.only is not None:
            share = progress
        else:
            domain = cumulative_domain_share(self.mixture, progress)
            share = domain if s.is_domain else progress - domain
        return self.tokens * s.weight * share

    def position(self, source: int, shard: int) -> int:
        """The source's first position drawn by ``shard`` (= the positions drawn by shards before it)."""
        return math.floor(self.due(source, shard * self.width) / self.sources[source].mean_tokens)

    def ranges(self, shard: int) -> list[ShardRange]:
        return [
            ShardRange(s, self.position(s, shard), self.position(s, shard + 1))
            for s in range(len(self.sources))
        ]

    def order(self, shard: int) -> tuple[list[ShardRange], np.ndarray, np.ndarray]:
        """The shard's ranges and, for its documents in order, their source and phase progress: each
        source's documents sit at evenly spaced progress points of the shard's range, merged by progress
        (ties: the earlier source)."""
        ranges = self.ranges(shard)
        progress, source = [], []
        for r in ranges:
            n = r.stop - r.start
            progress.append(self.width * (shard + (np.arange(n) + 0.5) / max(n, 1)))
            source.append(np.full(n, r.source, dtype=np.int64))
        progress, source = np.concatenate(progress), np.concatenate(source)
        order = np.lexsort((source, progress))
        return ranges, source[order], progress[order]
