"""The RFC 8058 one-click endpoint: a POST suppresses, a GET never does."""

from __future__ import annotations

import asyncio

import aiohttp
from sqlalchemy import text

from monitor.core.db import session_scope
from monitor.storage.suppression import suppressed_addresses
from sender.settings import UnsubscribeConfig
from sender.unsubscribe import header_builder, serve, token_maker
from tests.fixtures._ports import free_port
from tests.fixtures._waiting import eventually


async def test_one_click_post_suppresses_the_address(engine):
    config = UnsubscribeConfig(url="https://unsub.example.com/u", listen=f"127.0.0.1:{free_port()}", secret="k3y",
                               mailto="unsub@example.com")
    header = header_builder(config)("Bob@example.org", "spring")
    assert header.startswith("<https://unsub.example.com/u/")
    assert header.endswith("<mailto:unsub@example.com?subject=unsubscribe>")
    token = token_maker(config).make("Bob@example.org", "spring")
    stop = asyncio.Event()
    server = asyncio.create_task(serve(engine, config, stop))
    base = f"http://{config.listen}"
    try:
        async with aiohttp.ClientSession() as http:
            async def scanner_get() -> tuple[int, str] | None:
                try:
                    async with http.get(f"{base}/u/{token}") as page:  # link scanners GET: nothing happens
                        return page.status, await page.text()
                except aiohttp.ClientConnectorError:
                    return None  # not listening yet

            status, page = await eventually(scanner_get, what="the endpoint to answer a GET")
            assert status == 200 and "<form" in page
            with session_scope(engine) as session:
                assert not suppressed_addresses(session, ["bob@example.org"])
            async with http.post(f"{base}/u/{token}x", data={"List-Unsubscribe": "One-Click"}) as bad:
                assert bad.status == 404
            async with http.post(f"{base}/u/{token}", data={"other": "1"}) as wrong:
                assert wrong.status == 400
            async with http.post(f"{base}/u/{token}", data={"List-Unsubscribe": "One-Click"}) as done:
                assert done.status == 200
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)
    with session_scope(engine) as session:
        assert suppressed_addresses(session, ["bob@example.org"]) == {"bob@example.org"}
    with engine.connect() as conn:
        reason, source = conn.execute(text("SELECT reason, source FROM suppressions")).one()
    assert (reason, source) == ("opt_out", "list-unsubscribe")
