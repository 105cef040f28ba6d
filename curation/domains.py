"""Step 1, domain selection (paper Table 1): route each document to ``filter`` / ``direct`` or drop it."""

from __future__ import annotations

from curation.config import DomainConfig
from curation.stats import StepStats

FILTER, DIRECT = "filter", "direct"


def normalise_domain(name: str) -> str:
    """'Music & Dance' -> 'music_and_dance' so configs and FineFineWeb labels compare equal."""
    return "_".join(name.strip().lower().replace("&", " and ").replace("-", " ").split())


class DomainSelector:
    def __init__(self, config: DomainConfig):
        self.filter_required = {normalise_domain(d) for d in config.filter_required}
        self.directly_selected = {normalise_domain(d) for d in config.directly_selected}
        self.stats = StepStats("domain_selection")

    def route(self, domain: str) -> str | None:
        """``filter`` / ``direct``, or None (counted as ``dropped_domain_not_selected``)."""
        key = normalise_domain(domain)
        if key in self.filter_required:
            self.stats.keep()
            return FILTER
        if key in self.directly_selected:
            self.stats.keep()
            return DIRECT
        self.stats.drop("domain_not_selected")
        return None
