"""Small asyncio helpers of the sender's loops."""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout: float) -> None:
    """Wait for an event or a timeout, whichever first. (asyncio.wait_for
    costs a task per call and, on 3.11, can lose a cancellation that races
    with the event; this costs one future and a timer.)"""
    if event.is_set():
        return
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def done(_: object = None) -> None:
        if not fut.done():
            fut.set_result(None)

    waiter = asyncio.ensure_future(event.wait())
    waiter.add_done_callback(done)
    handle = loop.call_later(timeout, done)
    try:
        await fut
    finally:
        handle.cancel()
        if not waiter.done():
            waiter.cancel()
