"""The hot-path SMTP client against real receivers: Postfix smtp-sink and
scripted aiosmtpd servers (STARTTLS offered / demanded, refusals)."""

from __future__ import annotations

import asyncio

import pytest

from sender.smtp import SmtpConnection, SmtpFailure, dot_stuff
from tests.fixtures._ports import free_port
from tests.fixtures._waiting import eventually
from tests.fixtures.smtp_receivers import Script

MESSAGE = dot_stuff(b"From: a@example.com\r\nSubject: t\r\nX-Repmon-Track: v1.aaaaaaaaaaaa\r\n\r\n.dot\r\nbody\r\n")


async def test_pipelined_transactions_bound_to_a_source_address(smtp_sink):
    conn = await SmtpConnection.open(smtp_sink.host, smtp_sink.port, ehlo_name="mta3.example.com",
                                     source_ip="127.0.0.3", tls="opportunistic")
    assert conn.pipelining
    results = [await conn.send("bounces@example.com", f"u{i}@example.org", MESSAGE) for i in range(5)]
    assert all(r.delivered for r in results)
    assert results[0].reply.status == "2.0.0"
    await conn.quit()
    await eventually(lambda: sum(smtp_sink.tokens().values()) >= 5, what="5 messages in the sink dump")
    assert smtp_sink.client_addresses() == {"127.0.0.3": 5}
    assert smtp_sink.tokens() == {"v1.aaaaaaaaaaaa": 5}
    dump = smtp_sink.dump()
    assert b"\n.dot" in dump and b"..dot" not in dump  # stuffed on the wire, unstuffed by the server


async def test_chained_content_and_next_envelope_in_one_write(smtp_sink):
    conn = await SmtpConnection.open(smtp_sink.host, smtp_sink.port, ehlo_name="h", source_ip="127.0.0.2")
    conn.write(conn.envelope("b@example.com", "one@example.org"))
    assert [r.code for r in await conn.read(3)] == [250, 250, 354]
    conn.write(MESSAGE + b".\r\n" + conn.envelope("b@example.com", "two@example.org"))
    assert [r.code for r in await conn.read(4)] == [250, 250, 250, 354]
    conn.write(MESSAGE + b".\r\n")
    assert [r.code for r in await conn.read(1)] == [250]
    await conn.quit()
    await eventually(lambda: sum(smtp_sink.tokens().values()) >= 2, what="2 messages in the sink dump")
    assert sum(smtp_sink.tokens().values()) == 2


async def test_starttls_used_when_offered(scripted_smtp):
    server = scripted_smtp(Script(starttls=True))
    conn = await SmtpConnection.open(server.host, server.port, ehlo_name="h", tls="opportunistic")
    assert conn.tls
    assert (await conn.send("b@example.com", "x@example.org", MESSAGE)).delivered
    await conn.quit()
    assert server.received[0].tls


async def test_tls_required_but_not_offered_fails_the_connection(smtp_sink):
    with pytest.raises(SmtpFailure, match="does not offer STARTTLS"):
        await SmtpConnection.open(smtp_sink.host, smtp_sink.port, ehlo_name="h", tls="required")


async def test_plain_when_tls_off_even_if_offered(scripted_smtp):
    server = scripted_smtp(Script(starttls=True))
    conn = await SmtpConnection.open(server.host, server.port, ehlo_name="h", tls="none")
    assert not conn.tls
    await conn.quit()


async def test_refused_recipient_and_server_without_pipelining(scripted_smtp):
    server = scripted_smtp(Script(rcpt_replies={"gone@example.org": "550 5.1.1 <gone@example.org>: user unknown"}))
    conn = await SmtpConnection.open(server.host, server.port, ehlo_name="h")
    assert not conn.pipelining  # aiosmtpd does not offer it: the client goes step by step
    bad = await conn.send("b@example.com", "gone@example.org", MESSAGE)
    assert (bad.stage, bad.reply.code, bad.reply.status) == ("rcpt", 550, "5.1.1")
    good = await conn.send("b@example.com", "ok@example.org", MESSAGE)  # the session still works after RSET
    assert good.delivered
    await conn.quit()
    assert [r.rcpt_tos for r in server.received] == [["ok@example.org"]]


async def test_connection_refused_is_an_smtp_failure_without_reply():
    with pytest.raises(SmtpFailure) as info:
        await SmtpConnection.open("127.0.0.1", free_port(), ehlo_name="h", connect_timeout=2)
    assert info.value.reply is None


async def test_greeting_refusal_carries_the_reply():
    async def refuse(reader, writer):
        writer.write(b"421 4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(SmtpFailure) as info:
            await SmtpConnection.open("127.0.0.1", port, ehlo_name="h")
        assert info.value.reply.code == 421 and "[TSS04]" in info.value.reply.text
    finally:
        server.close()
        await server.wait_closed()
