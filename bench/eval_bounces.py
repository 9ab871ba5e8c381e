"""Score repmon's parser against the bounce corpus labels.

    .venv/bin/python bench/eval_bounces.py [--shared ../shared] [--misses] [--cv]

Reads corpus/bounces/labels.jsonl, parses every email through
`parsers.parse_bytes` and matches events to label rows by (file, recipient)
or, for rows without a recipient, by (file, recipient_index). Rows marked
ambiguous are left out; status is scored only where the label's status is
not a Sisimai-internal pseudo code.

--cv: leave-one-family-out cross-validation of the classifier's tuned
choice, its order of evidence (parsers/bounce/tables/order.toml). For each
MTA family (the label's smtp_agent) the order is chosen among CANDIDATE
orders by its score on every *other* family, and that choice is scored on
the held-out family; the pooled held-out score is the figure for mail of a
family the choice never saw. Also printed: "tables only", the classifier
without the phrase rules written while looking at this corpus (the
reference and provider tables, status codes, SMTP stage and reply code
alone), a floor for mail unlike anything here.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

METRICS = ("kind", "reason", "hard_or_soft", "status", "feedback_type")


@dataclass
class Score:
    right: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    total: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    misses: list[dict[str, Any]] = field(default_factory=list)
    rows: list[tuple[str, str, bool]] = field(default_factory=list)  # (family, metric, right)

    def add(self, metric: str, ok: bool, miss: dict[str, Any], family: str = "") -> None:
        self.rows.append((family, metric, ok))
        self.total[metric] += 1
        if ok:
            self.right[metric] += 1
        else:
            self.misses.append({"metric": metric, **miss})

    def accuracy(self, metric: str) -> float:
        return self.right[metric] / self.total[metric] if self.total[metric] else 1.0


def _default_parse(data: bytes) -> list[Any]:
    from parsers import parse_bytes

    return parse_bytes(data)


def _direct_parse(data: bytes) -> list[Any]:
    """The mail parsers without the report stage: for development while
    parsers.reports is not importable (not what the test scores)."""
    from parsers.arf import parse_arf
    from parsers.autoreply import parse_autoreply
    from parsers.bounce import parse_bounce
    from parsers.events import NotBounceEvent
    from parsers.mime import parse_message

    msg = parse_message(data)
    for parse in (parse_arf, parse_bounce, parse_autoreply):
        events = parse(msg, data)
        if events:
            return list(events)
    return [NotBounceEvent(subject=msg.header("subject"))]


def _label_reason(event: dict[str, Any]) -> str | None:
    kind = event.get("kind")
    if kind == "bounce":
        return event.get("reason")
    return {"feedback": "feedback", "auto_reply": "vacation", "delivery_success": "delivered"}.get(str(kind))


def _match(rows: list[dict[str, Any]], events: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """Pair label rows with events: by recipient, else by position."""
    pairs = []
    used: set[int] = set()
    for row in rows:
        found = None
        if row["recipient"]:
            for i, event in enumerate(events):
                if i not in used and (event.get("recipient") or "").lower() == row["recipient"].lower():
                    found = i
                    break
        else:
            index = (row["recipient_index"] or 1) - 1
            if index < len(events) and index not in used:
                found = index
        if found is not None:
            used.add(found)
        pairs.append((row, events[found] if found is not None else None))
    return pairs


def evaluate(corpus: Path, parse: Callable[[bytes], list[Any]] = _default_parse) -> Score:
    rows_by_file: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with open(corpus / "labels.jsonl", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if not row.get("ambiguous"):
                rows_by_file[row["file"]].append(row)
    score = Score()
    for name, rows in sorted(rows_by_file.items()):
        events = [e.to_dict() for e in parse((corpus / name).read_bytes())]
        for row, event in _match(rows, events):
            _score_row(score, name, row, event, events)
    return score


def _score_row(score: Score, name: str, row: dict[str, Any], event: dict[str, Any] | None,
               events: list[dict[str, Any]]) -> None:
    got = event or {}
    family = row.get("smtp_agent") or "(none)"
    miss = {"file": name, "recipient": row["recipient"], "got_events": [e.get("recipient") for e in events]}
    score.add("kind", got.get("kind") == row["kind"], {**miss, "want": row["kind"], "got": got.get("kind")}, family)
    if row["reason"] is not None:
        reason = _label_reason(got)
        score.add("reason", reason == row["reason"], {**miss, "want": row["reason"], "got": reason,
                                                      "diagnostic": (got.get("diagnostic") or "")[:300]}, family)
    if row["hard_or_soft"] is not None:
        score.add("hard_or_soft", got.get("hard_or_soft") == row["hard_or_soft"],
                  {**miss, "want": row["hard_or_soft"], "got": got.get("hard_or_soft")}, family)
    if row["status"] and not row["status_is_pseudo"]:
        score.add("status", got.get("status") == row["status"], {**miss, "want": row["status"], "got": got.get("status")},
                  family)
    if row["kind"] == "feedback":
        score.add("feedback_type", got.get("feedback_type") == row["feedback_type"],
                  {**miss, "want": row["feedback_type"], "got": got.get("feedback_type")}, family)


# The orders of evidence the cross-validation chooses among: where the
# provider tables, the decisive status codes and the reference phrases sit
# relative to the specific phrases and the status code.
_TAIL: tuple[str, ...] = ("command", "reply", "weak")


def candidate_orders() -> list[tuple[str, ...]]:
    orders = []
    for head in (("decisive_status",), ()):
        for provider_first in (True, False):
            for core in (("strong", "status", "medium"), ("status", "strong", "medium")):
                for at in range(len(core) + len(_TAIL) + 1):
                    body = list(core + _TAIL)
                    body.insert(at, "reference")
                    steps = ("provider", *head, *body) if provider_first else (*head, body[0], "provider", *body[1:])
                    orders.append(tuple(steps))
    return orders


TABLES_ONLY: tuple[str, ...] = ("provider", "decisive_status", "status", "reference", "command", "reply")


@dataclass
class FoldResult:
    family: str
    order: tuple[str, ...]
    right: dict[str, int]
    total: dict[str, int]


def _tally(rows: list[tuple[str, str, bool]], keep: Callable[[str], bool]) -> tuple[dict[str, int], dict[str, int]]:
    right: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for family, metric, ok in rows:
        if keep(family):
            total[metric] += 1
            right[metric] += ok
    return right, total


def _rank(rows: list[tuple[str, str, bool]], keep: Callable[[str], bool]) -> tuple[int, int]:
    right, _ = _tally(rows, keep)
    return right["reason"], right["hard_or_soft"]


def cross_validate(corpus: Path, parse: Callable[[bytes], list[Any]] = _default_parse) -> list[FoldResult]:
    """Leave-one-family-out: the order chosen on the other families, scored on the held-out one."""
    from parsers.bounce.classify import use_evidence_order

    orders = candidate_orders()
    scored: list[list[tuple[str, str, bool]]] = []
    try:
        for order in orders:
            use_evidence_order(order)
            scored.append(evaluate(corpus, parse).rows)
    finally:
        use_evidence_order(None)
    families = sorted({family for family, _, _ in scored[0]})
    folds = []
    for held_out in families:
        def others(family: str, held_out: str = held_out) -> bool:
            return family != held_out

        def this(family: str, held_out: str = held_out) -> bool:
            return family == held_out

        # best on the other families; ties go to the earlier candidate
        best = max(range(len(orders)), key=lambda i: (_rank(scored[i], others), -i))
        right, total = _tally(scored[best], this)
        folds.append(FoldResult(held_out, orders[best], right, total))
    return folds


def _print_cv(corpus: Path, parse: Callable[[bytes], list[Any]]) -> None:
    from parsers.bounce.classify import evidence_order, use_evidence_order

    folds = cross_validate(corpus, parse)
    print("| held-out family | reason | hard/soft | order chosen on the other families |")
    print("|---|---|---|---|")
    pooled_right: dict[str, int] = defaultdict(int)
    pooled_total: dict[str, int] = defaultdict(int)
    for fold in folds:
        for metric in ("reason", "hard_or_soft"):
            pooled_right[metric] += fold.right[metric]
            pooled_total[metric] += fold.total[metric]
        print(f"| {fold.family} | {fold.right['reason']}/{fold.total['reason']} "
              f"| {fold.right['hard_or_soft']}/{fold.total['hard_or_soft']} | {' > '.join(fold.order)} |")
    for metric in ("reason", "hard_or_soft"):
        share = pooled_right[metric] / pooled_total[metric] if pooled_total[metric] else 1.0
        print(f"cross-validated {metric}: {pooled_right[metric]}/{pooled_total[metric]} = {share:.1%}")
    chosen = Counter(fold.order for fold in folds).most_common(1)[0][0]
    print(f"order chosen most often: {' > '.join(chosen)}")
    print(f"shipped order (tables/order.toml): {' > '.join(evidence_order())}")
    use_evidence_order(TABLES_ONLY)
    try:
        score = evaluate(corpus, parse)
    finally:
        use_evidence_order(None)
    print(f"tables only ({' > '.join(TABLES_ONLY)}): reason {score.accuracy('reason'):.1%}, "
          f"hard/soft {score.accuracy('hard_or_soft'):.1%}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--misses", action="store_true", help="print every mismatch")
    parser.add_argument("--metric", help="with --misses: only this metric")
    parser.add_argument("--direct", action="store_true", help="call the mail parsers directly, not parse_bytes")
    parser.add_argument("--cv", action="store_true", help="leave-one-family-out cross-validation of the evidence order")
    args = parser.parse_args(argv)
    if args.cv:
        _print_cv(args.shared / "corpus" / "bounces", _direct_parse if args.direct else _default_parse)
        return 0
    score = evaluate(args.shared / "corpus" / "bounces", _direct_parse if args.direct else _default_parse)
    if args.misses:
        for miss in score.misses:
            if not args.metric or miss["metric"] == args.metric:
                print(json.dumps(miss, ensure_ascii=False))
    print("| metric | right | rows | accuracy |")
    print("|---|---|---|---|")
    for metric in METRICS:
        print(f"| {metric} | {score.right[metric]} | {score.total[metric]} | {score.accuracy(metric):.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
