"""The classifier's knowledge, read once from the data files in tables/.

- tables/reasons/<reason>.toml: one table per reason. `[reference]` holds
  plain lower-case phrases (a text containing one states the reason; from
  Sisimai's lists, BSD 2-Clause, tables/LICENSE-sisimai); each `[[rule]]`
  holds regular expressions of one tier ("strong", "medium", "weak") with
  its rank among that tier's rules of every reason (a decimal rank puts a
  rule between two others: 10.5 is tried after 10 and before 11), the anchor words that
  must occur before the expressions are tried, and optionally the SMTP
  stages (`stage`) and status classes (`status_class`) it is limited to.
- tables/providers/<provider>.toml: one table per provider, its documented
  replies (reply code + enhanced status + phrase -> reason), its servers'
  host names (`hosts`) and words only its replies contain (`markers`).
- tables/order.toml: the order of evidence and the order in which the
  reference phrases of different reasons are tried.

Adding a phrase is adding a row (and a test in tests/test_bounce_tables.py).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

from parsers.bounce import reasons as R

TABLES: Final = Path(__file__).resolve().parent / "tables"
TIERS: Final = ("strong", "medium", "weak")


@dataclass(frozen=True, slots=True)
class PhraseRule:
    """Regular expressions that state one reason, tried only when one of
    their anchor words occurs (a plain substring test keeps this cheap)."""

    reason: str
    anchors: tuple[str, ...]  # lower-case substrings, one of which must occur
    pattern: re.Pattern[str]
    stages: frozenset[str] = frozenset()  # SMTP commands it applies to; empty: any
    status_classes: frozenset[str] = frozenset()  # "4" / "5"; empty: any

    def matches(self, lowered: str, command: str | None = None, status: str | None = None) -> bool:
        if self.stages and command not in self.stages:
            return False
        if self.status_classes and not (status and status[0] in self.status_classes):
            return False
        for anchor in self.anchors:
            if anchor in lowered:
                return self.pattern.search(lowered) is not None
        return False


@dataclass(frozen=True, slots=True)
class PlainPhrases:
    """A reason's reference phrases: the text contains one, and none of `excluded`."""

    reason: str
    phrases: tuple[str, ...]
    excluded: tuple[str, ...] = ()

    def matches(self, lowered: str) -> bool:
        for excluded in self.excluded:
            if excluded in lowered:
                return False
        for phrase in self.phrases:
            if phrase in lowered:
                return True
        return False


@dataclass(frozen=True, slots=True)
class ProviderReply:
    """One documented reply of a provider: its phrase (or several phrases,
    all of which the reply contains), with its reply code and enhanced
    status where the provider's documentation gives them."""

    provider: str
    reason: str
    phrase: tuple[str, ...]
    code: int | None = None
    status: str | None = None

    def matches(self, lowered: str, reply_code: int | None, status: str | None) -> bool:
        for phrase in self.phrase:
            if phrase not in lowered:
                return False
        if self.code is not None and reply_code is not None and self.code != reply_code:
            return False
        if self.status is None or status is None or self.status == status:
            return True
        # a row documented with an "other" detail (x.y.0) stands for its subject: Gmail's
        # "unusual rate of unsolicited mail" comes as 4.7.0 and as 4.7.28; a precise detail
        # must match (its 5.1.7 and 5.1.3 tell a bad sender from a bad recipient)
        return self.status.endswith(".0") and _subject(self.status) == _subject(status)


def _subject(status: str) -> str:
    """"4.7.28" -> "4.7"."""
    return status[: status.find(".", 2)] if status.count(".") == 2 else status


@dataclass(frozen=True, slots=True)
class Knowledge:
    rules: dict[str, tuple[PhraseRule, ...]]  # tier -> rules in rank order
    reference: tuple[PlainPhrases, ...]  # in reference order
    providers: tuple[ProviderReply, ...]
    provider_hosts: dict[str, tuple[str, ...]]  # provider -> host name suffixes
    provider_markers: dict[str, tuple[str, ...]]  # provider -> words only its replies contain
    evidence: tuple[str, ...]  # the default order of evidence (classify.STEPS)
    decisive_status: frozenset[str]  # subject.detail codes that outrank the text


def _read(path: Path) -> dict[str, Any]:
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def _phrase_rule(reason: str, row: dict[str, Any]) -> PhraseRule:
    pattern = re.compile("|".join(f"(?:{alternative})" for alternative in row["match"]))
    return PhraseRule(reason, tuple(row["anchors"]), pattern, frozenset(row.get("stage", ())),
                      frozenset(str(c) for c in row.get("status_class", ())))


def _check_reason(reason: str, where: Path) -> str:
    if reason not in R.ALL_REASONS:
        raise ValueError(f"{where}: unknown reason {reason!r}")
    return reason


@cache
def load(root: Path = TABLES) -> Knowledge:
    """Every table under `root`, parsed and compiled (once per process)."""
    order = _read(root / "order.toml")
    ranked: dict[str, list[tuple[float, PhraseRule]]] = {tier: [] for tier in TIERS}
    plain: dict[str, PlainPhrases] = {}
    for path in sorted((root / "reasons").glob("*.toml")):
        table = _read(path)
        reason = _check_reason(table["reason"], path)
        for row in table.get("rule", ()):
            ranked[row["tier"]].append((row["rank"], _phrase_rule(reason, row)))
        reference = table.get("reference")
        if reference:
            plain[reason] = PlainPhrases(reason, tuple(p.lower() for p in reference["phrases"]),
                                         tuple(p.lower() for p in reference.get("not", ())))
    rules = {tier: tuple(rule for _, rule in sorted(rows, key=lambda pair: pair[0])) for tier, rows in ranked.items()}
    reference_order = [r for r in order["reference_order"] if r in plain]
    reference_order += sorted(set(plain) - set(reference_order))
    providers: list[ProviderReply] = []
    hosts: dict[str, tuple[str, ...]] = {}
    markers: dict[str, tuple[str, ...]] = {}
    for path in sorted((root / "providers").glob("*.toml")):
        table = _read(path)
        hosts[table["provider"]] = tuple(table.get("hosts", ()))
        markers[table["provider"]] = tuple(m.lower() for m in table.get("markers", ()))
        for row in table.get("reply", ()):
            phrases = row["phrase"] if isinstance(row["phrase"], list) else [row["phrase"]]
            providers.append(ProviderReply(table["provider"], _check_reason(row["reason"], path),
                                           tuple(p.lower() for p in phrases), row.get("code"), row.get("status")))
    return Knowledge(rules, tuple(plain[r] for r in reference_order), tuple(providers), hosts, markers,
                     tuple(order["evidence"]), frozenset(order["decisive_status"]))
