"""IP warm-up: a cold IP's daily volume per provider follows a schedule, and
the IP moves to the next day's volume only when the previous day's target
went out (at least `advance_fraction` of it delivered) without deferral
trouble (deferrals at most `max_deferral_rate` of attempts). A day with too
little mail or too many deferrals is repeated: the schedule counts good
sending days, not calendar days.

Volume is counted when a message is routed to the IP (so a cap is never
overshot by mail already queued on the lane); what happened to it is counted
from delivery outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection

from sender.settings import WarmupConfig


@dataclass(slots=True)
class WarmupState:
    source_ip: str
    destination: str
    day_index: int
    day: str
    routed_today: int = 0
    delivered_today: int = 0
    deferred_today: int = 0
    started_on: str = ""
    dirty: bool = True

    def cap(self, schedule: list[int]) -> int | None:
        """Today's volume limit, or None once warm."""
        return schedule[self.day_index] if self.day_index < len(schedule) else None

    def roll_over(self, today: str, settings: WarmupConfig) -> None:
        """Close the previous day (advancing or repeating it) when the UTC day changed."""
        if self.day == today:
            return
        target = self.cap(settings.schedule)
        attempts = self.delivered_today + self.deferred_today
        deferral_rate = self.deferred_today / attempts if attempts else 0.0
        if target is not None and self.delivered_today >= settings.advance_fraction * target \
                and deferral_rate <= settings.max_deferral_rate:
            self.day_index += 1
        self.day = today
        self.routed_today = self.delivered_today = self.deferred_today = 0
        self.dirty = True


def load_states(conn: Connection) -> dict[tuple[str, str], WarmupState]:
    rows = conn.execute(text("SELECT source_ip, destination, day_index, day, routed_today, delivered_today, "
                             "deferred_today, started_on FROM sender_warmup"))
    return {(r[0], r[1]): WarmupState(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], dirty=False) for r in rows}


def save_states(conn: Connection, states: list[WarmupState], now: float) -> None:
    """Upsert the changed states (an UPDATE, then an INSERT for new ones)."""
    if not states:
        return
    rows = [{"ip": s.source_ip, "dest": s.destination, "idx": s.day_index, "day": s.day, "r": s.routed_today,
             "d": s.delivered_today, "f": s.deferred_today, "start": s.started_on, "now": now} for s in states]
    existing = {(r[0], r[1]) for r in conn.execute(text("SELECT source_ip, destination FROM sender_warmup"))}
    updates = [r for r in rows if (r["ip"], r["dest"]) in existing]
    inserts = [r for r in rows if (r["ip"], r["dest"]) not in existing]
    if updates:
        conn.execute(text("UPDATE sender_warmup SET day_index = :idx, day = :day, routed_today = :r, "
                          "delivered_today = :d, deferred_today = :f, updated_at = :now "
                          "WHERE source_ip = :ip AND destination = :dest"), updates)
    if inserts:
        conn.execute(text("INSERT INTO sender_warmup (source_ip, destination, day_index, day, routed_today, "
                          "delivered_today, deferred_today, started_on, updated_at) "
                          "VALUES (:ip, :dest, :idx, :day, :r, :d, :f, :start, :now)"),
                     inserts)
    for s in states:
        s.dirty = False
