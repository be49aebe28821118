"""The admin client against a real server: every call, and the typed error."""

from __future__ import annotations

import asyncio

import pytest
from conftest import Server

from ipush import AdminClient, AdminError, Message, SyncAdminClient


async def test_every_admin_call(server: Server) -> None:
    a = AdminClient(server.admin_url)
    health = await a.health()
    assert health["status"] == "ok" and health["cores"] == 2

    assert await a.publish("ad1", "op", "one", ttl=3600) == "ok"
    assert await a.publish("ad1", "op", "two", idempotency_key="k-1") == "ok"
    assert await a.publish("ad1", "op", "live only", ttl=0) == "ok"  # not stored
    assert await a.sub("ad1", "news") == "ok"
    assert (
        await a.publish_channel("news", "op", "headline é", ttl=60, idempotency_key="k-2") == "ok"
    )

    msgs = await a.msg("ad1")
    assert all(isinstance(m, Message) for m in msgs)
    assert [(m.type, m.seq, m.body) for m in msgs] == [
        (3, 1, "one"),
        (3, 2, "two"),
        (4, 3, "headline é"),
    ]
    assert msgs[2].channel == "news" and msgs[2].sender == "op" and msgs[2].to == "ad1"

    assert await a.unsub("ad1", "news") == "ok"
    assert await a.publish_channel("news", "op", "not for ad1") == "ok"
    assert len(await a.msg("ad1")) == 3

    assert await a.shard("ad1") == f"127.0.0.1:{server.client_port}"

    stats = await a.stats()
    for key in ("auth_fail_number", "recv_type", "request", "throughput", "user"):
        assert key in stats
    assert stats["request"]["Pub"] >= 5

    assert await a.msg("nobody") == []


async def test_admin_errors_are_typed(server: Server) -> None:
    a = AdminClient(server.admin_url)
    with pytest.raises(AdminError) as e:
        await a.publish("", "op", "x")
    assert e.value.status == 400 and e.value.reason == "invalid to"
    with pytest.raises(AdminError) as e:
        await a.disconnect("not-connected")
    assert e.value.status == 404
    with pytest.raises(ValueError):
        await a.publish("u", "op", "x", ttl=-1)


def test_sync_wrapper(server: Server) -> None:
    s = SyncAdminClient(server.admin_url)
    assert s.publish("sy1", "op", "sync") == "ok"
    assert [m.body for m in s.msg("sy1")] == ["sync"]


async def test_admin_unreachable_raises_oserror() -> None:
    from conftest import free_ports

    (port,) = free_ports(1)
    with pytest.raises((OSError, asyncio.TimeoutError)):
        await AdminClient(f"http://127.0.0.1:{port}", timeout=2).health()
