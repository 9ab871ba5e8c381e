"""The waiting helpers (tests/fixtures/_waiting.py) cannot pass by running out
of time: a condition that never holds fails the test, with what was awaited."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from tests.fixtures._waiting import eventually, wait_until


async def test_eventually_returns_the_first_truthy_value():
    calls = itertools.count(1)
    assert await eventually(lambda: (n := next(calls)) >= 3 and n, interval=0.001) == 3


async def test_eventually_awaits_async_checks_and_runs_blocking_ones_in_a_thread():
    async def ready() -> str:
        await asyncio.sleep(0)
        return "ready"

    assert await eventually(ready) == "ready"
    assert await eventually(lambda: time.sleep(0.01) or "done", in_thread=True) == "done"


async def test_eventually_fails_with_what_it_waited_for_and_the_last_value():
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"timed out after 0\.2 s waiting for the thing \(last value: 0\)"):
        await eventually(lambda: 0, timeout=0.2, interval=0.01, what="the thing")
    assert 0.2 <= time.monotonic() - started < 2


async def test_an_assertion_in_the_check_means_not_yet_and_is_reported_at_the_end():
    seen = []

    def check() -> bool:
        seen.append(1)
        assert len(seen) >= 3, f"only {len(seen)}"
        return True

    assert await eventually(check, interval=0.001)
    with pytest.raises(AssertionError, match="last error: never"):
        await eventually(_never, timeout=0.05, interval=0.01)


def _never() -> bool:
    raise AssertionError("never")


def test_wait_until_is_the_same_for_synchronous_code():
    deadline = time.monotonic() + 0.05
    assert wait_until(lambda: time.monotonic() > deadline, interval=0.005)
    with pytest.raises(AssertionError, match="waiting for nothing"):
        wait_until(lambda: None, timeout=0.05, interval=0.01, what="nothing")


def test_other_errors_are_not_retried():
    calls = []

    def broken() -> bool:
        calls.append(1)
        raise KeyError("bug")

    with pytest.raises(KeyError):
        wait_until(broken, timeout=5)
    assert calls == [1]
