"""Score repmon's parser against the bounce corpus labels.

    .venv/bin/python bench/eval_bounces.py [--shared ../shared] [--misses]

Reads corpus/bounces/labels.jsonl, parses every email through
`parsers.parse_bytes` and matches events to label rows by (file, recipient)
or, for rows without a recipient, by (file, recipient_index). Rows marked
ambiguous are left out; status is scored only where the label's status is
not a Sisimai-internal pseudo code.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

METRICS = ("kind", "reason", "hard_or_soft", "status", "feedback_type")


@dataclass
class Score:
    right: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    total: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    misses: list[dict[str, Any]] = field(default_factory=list)

    def add(self, metric: str, ok: bool, miss: dict[str, Any]) -> None:
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
    return {"feedback": "feedback", "auto_reply": "vacation", "delivery_success": "delivered"}.get(kind)


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
    miss = {"file": name, "recipient": row["recipient"], "got_events": [e.get("recipient") for e in events]}
    score.add("kind", got.get("kind") == row["kind"], {**miss, "want": row["kind"], "got": got.get("kind")})
    if row["reason"] is not None:
        reason = _label_reason(got)
        score.add("reason", reason == row["reason"], {**miss, "want": row["reason"], "got": reason,
                                                      "diagnostic": (got.get("diagnostic") or "")[:300]})
    if row["hard_or_soft"] is not None:
        score.add("hard_or_soft", got.get("hard_or_soft") == row["hard_or_soft"],
                  {**miss, "want": row["hard_or_soft"], "got": got.get("hard_or_soft")})
    if row["status"] and not row["status_is_pseudo"]:
        score.add("status", got.get("status") == row["status"], {**miss, "want": row["status"], "got": got.get("status")})
    if row["kind"] == "feedback":
        score.add("feedback_type", got.get("feedback_type") == row["feedback_type"],
                  {**miss, "want": row["feedback_type"], "got": got.get("feedback_type")})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--misses", action="store_true", help="print every mismatch")
    parser.add_argument("--metric", help="with --misses: only this metric")
    parser.add_argument("--direct", action="store_true", help="call the mail parsers directly, not parse_bytes")
    args = parser.parse_args(argv)
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
