"""publish_batch against a real server: per-item results in order, delivery in order, the
split into several requests, idempotency_key passed, client-side checks."""

from __future__ import annotations

import asyncio
from typing import Any, Callable, List

import pytest
from conftest import Recorder, Server, free_ports, wait_until

from ipush import AdminClient, AdminError, BatchItem, Client, SyncAdminClient


async def listen(server: Server, uid: str) -> tuple[Client, Recorder]:
    c = Client(server.client_url, uid, "pw", transport="websocket", auto_ack=False)
    rec = Recorder(c)
    await c.connect(timeout=10)
    return c, rec


async def test_mixed_batch_answers_and_arrives_in_order(server: Server) -> None:
    admin = AdminClient(server.admin_url)
    assert await admin.sub("bxa", "bxc") == "ok"
    ca, ra = await listen(server, "bxa")
    cb, rb = await listen(server, "bxb")
    try:
        results = await admin.publish_batch(
            [
                BatchItem("op", "one", to="bxa"),
                BatchItem("op", "for b", to="bxb", ttl=60),
                BatchItem("op", "two", channel="bxc"),
                BatchItem("op", "x", to="bad uid"),
                BatchItem("op", "three é", to="bxa", idempotency_key="batch:1"),
            ]
        )
        assert [r.ok for r in results] == [True, True, True, False, True]
        assert [r.result for r in results] == ["ok", "ok", "ok", None, "ok"]
        err = results[3].error
        assert isinstance(err, AdminError) and (err.status, err.reason) == (400, "invalid to")
        await wait_until(lambda: len(ra.messages) >= 3, what="3 messages for bxa")
        assert [(m.body, m.type, m.seq) for m in ra.messages] == [
            ("one", 3, 1),
            ("two", 4, 2),
            ("three é", 3, 3),
        ]
        await wait_until(lambda: rb.bodies() == ["for b"], what="the message for bxb")
    finally:
        await ca.close()
        await cb.close()


async def test_split_into_requests_keeps_order(server: Server) -> None:
    admin = AdminClient(server.admin_url, max_batch_lines=3)
    before = (await admin.stats())["request"]["Pub"]
    c, rec = await listen(server, "bsp")
    try:
        bodies = [f"m{i}" for i in range(8)]
        results = await admin.publish_batch([BatchItem("op", b, to="bsp") for b in bodies])
        assert [r.result for r in results] == ["ok"] * 8
        await wait_until(lambda: len(rec.messages) >= 8, what="8 messages")
        assert [(m.body, m.seq) for m in rec.messages] == [(b, i + 1) for i, b in enumerate(bodies)]
    finally:
        await c.close()
    # 3 + 3 + 2 lines: three /pub/batch requests (each counted as a Pub request).
    assert (await admin.stats())["request"]["Pub"] - before == 3
    # A byte limit splits as well: each line is 34 bytes, so 2 + 2 + 1 lines.
    by_bytes = AdminClient(server.admin_url, max_batch_bytes=100)
    before = (await admin.stats())["request"]["Pub"]
    rs = await by_bytes.publish_batch([BatchItem("op", f"b{i}", to="bsb") for i in range(5)])
    assert [r.result for r in rs] == ["ok"] * 5
    assert (await admin.stats())["request"]["Pub"] - before == 3
    assert [m.body for m in await admin.msg("bsb")] == [f"b{i}" for i in range(5)]
    assert await admin.publish_batch([]) == []


async def test_idempotency_key_is_passed_and_items_checked(server: Server) -> None:
    admin = AdminClient(server.admin_url)
    results = await admin.publish_batch(
        [
            BatchItem("op", "keyed", to="bik", idempotency_key="order-17:a"),
            # The server checks a key it is given (1-128 of A-Z a-z 0-9 _ . : -): proof it is sent.
            BatchItem("op", "bad key", to="bik", idempotency_key="not a key"),
        ]
    )
    assert results[0].result == "ok"
    err = results[1].error
    assert isinstance(err, AdminError) and err.status == 400
    assert err.reason.startswith("invalid idempotency_key")
    bad: List[Any] = [
        [BatchItem("op", "never sent", to="bik"), BatchItem("op", "x", to="bik", ttl=-1)],
        [BatchItem("op", "x")],
        [BatchItem("op", "x", to="bik", channel="c")],
        [BatchItem("op", "x", to="bik", idempotency_key="")],
    ]
    for items in bad:
        with pytest.raises(ValueError):
            await admin.publish_batch(items)
    with pytest.raises(TypeError):
        await admin.publish_batch([BatchItem("op", 5, to="bik")])  # type: ignore[arg-type]
    assert [m.body for m in await admin.msg("bik")] == ["keyed"]


async def test_a_failed_request_fails_its_items_and_the_later_ones() -> None:
    (port,) = free_ports(1)
    dead = AdminClient(f"http://127.0.0.1:{port}", timeout=2, max_batch_lines=1)
    rs = await dead.publish_batch([BatchItem("op", "a", to="u"), BatchItem("op", "b", to="u")])
    assert len(rs) == 2
    assert all(isinstance(r.error, (OSError, asyncio.TimeoutError)) for r in rs)


def test_sync_publish_batch(server: Server) -> None:
    s = SyncAdminClient(server.admin_url)
    rs = s.publish_batch([BatchItem("op", "sync", to="bsy"), BatchItem("op", "x", to="")])
    assert [r.ok for r in rs] == [True, False]
    assert [m.body for m in s.msg("bsy")] == ["sync"]


async def test_limits_must_match_a_server_with_lower_ones(
    make_server: Callable[..., Server],
) -> None:
    s = make_server(extra=["--max_batch_lines=2"])
    items = [BatchItem("op", f"l{i}", to="blim") for i in range(3)]
    # The default limit sends all 3 in one request: the server refuses it whole (413).
    rs = await AdminClient(s.admin_url).publish_batch(items)
    errs = [r.error for r in rs]
    assert all(isinstance(e, AdminError) and e.status == 413 for e in errs), errs
    assert errs[0] is errs[2]
    admin = AdminClient(s.admin_url, max_batch_lines=2)
    assert await admin.msg("blim") == []
    assert [r.result for r in await admin.publish_batch(items)] == ["ok"] * 3
    assert [m.body for m in await admin.msg("blim")] == ["l0", "l1", "l2"]
