"""The client against a real ipush_server: receive on every transport, ack, MessagePack,
send/subscribe, replaced, JWT refresh, resume after a restart, and 303 in a 2-node cluster."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any, Callable, List

import pytest
from conftest import Recorder, Server, free_ports, wait_until

from ipush import AdminClient, Client, HttpStatusError, Message

TRANSPORTS = ["websocket", "sse", "chunked"]


def bodies(msgs: List[Message]) -> List[Any]:
    return [m.body for m in msgs]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_receive(server: Server, transport: str) -> None:
    admin = AdminClient(server.admin_url)
    # Stored before the client connects: replayed on connect.
    await admin.publish("rx1", "op", "offline one")
    c = Client(server.client_url, "rx1", "pw", transport=transport, auto_ack=False)
    rec = Recorder(c)
    await c.connect(timeout=10)
    try:
        assert rec.of("connected") == [("connected", transport, server.client_url)]
        assert c.transport == transport
        await admin.publish("rx1", "op", 'live é 😀 "q" \\ \t')
        await admin.publish("rx1", "op", "no seq", ttl=0)
        await wait_until(lambda: len(rec.messages) >= 3, what="3 messages")
        m0, m1, m2 = rec.messages[:3]
        assert (m0.type, m0.sender, m0.to, m0.body, m0.seq) == (3, "op", "rx1", "offline one", 1)
        assert (m1.body, m1.seq) == ('live é 😀 "q" \\ \t', 2)
        assert (m2.body, m2.seq) == ("no seq", None)
        assert c.last_seq == 2
    finally:
        await c.close()
    assert rec.of("closed") == [("closed", "closed")]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_subscribe_send_and_channel(server: Server, transport: str) -> None:
    a = Client(server.client_url, "sa", "pw", transport=transport)
    b = Client(server.client_url, "sb", "pw", transport="websocket")
    ra, rb = Recorder(a), Recorder(b)
    await a.connect(timeout=10)
    await b.connect(timeout=10)
    try:
        await a.subscribe("room")
        await b.subscribe("room")
        admin = AdminClient(server.admin_url)
        # A stream's messages are handled in order: once each client gets a message it sent
        # itself after its subscribe, that subscribe is in effect.
        await a.send_to_user("sa", "barrier a")
        await b.send_to_user("sb", "barrier b")
        await wait_until(lambda: "barrier a" in bodies(ra.messages), what="barrier a")
        await wait_until(lambda: "barrier b" in bodies(rb.messages), what="barrier b")
        await a.send_to_channel("room", "hello room")
        await wait_until(lambda: "hello room" in bodies(rb.messages), what="channel msg at b")
        await wait_until(lambda: "hello room" in bodies(ra.messages), what="channel msg at a")
        cm = [m for m in rb.messages if m.body == "hello room"][0]
        assert (cm.type, cm.sender, cm.channel, cm.to) == (4, "sa", "room", "sb")
        await b.send_to_user("sa", "direct")
        await wait_until(lambda: "direct" in bodies(ra.messages), what="user msg at a")
        dm = [m for m in ra.messages if m.body == "direct"][0]
        assert (dm.type, dm.sender, dm.to) == (3, "sb", "sa")
        await a.unsubscribe("room")
        await a.send_to_user("sa", "barrier a2")
        await wait_until(lambda: "barrier a2" in bodies(ra.messages), what="barrier a2")
        await admin.publish_channel("room", "op", "after unsub")
        await wait_until(lambda: "after unsub" in bodies(rb.messages), what="b still a member")
        assert "after unsub" not in bodies(ra.messages)
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_auto_ack_empties_offline(server: Server, transport: str) -> None:
    admin = AdminClient(server.admin_url)
    for i in range(5):
        await admin.publish("ack1", "op", f"m{i}")
    assert [m.seq for m in await admin.msg("ack1")] == [1, 2, 3, 4, 5]
    c = Client(server.client_url, "ack1", "pw", transport=transport, ack_interval=0.05)
    rec = Recorder(c)
    await c.connect(timeout=10)
    try:
        await wait_until(lambda: len(rec.messages) == 5, what="5 replayed")

        async def empty() -> bool:
            return await admin.msg("ack1") == []

        await wait_until(empty, what="/msg empty after the batched ack")
    finally:
        await c.close()


async def test_manual_ack_partial(server: Server) -> None:
    admin = AdminClient(server.admin_url)
    for i in range(4):
        await admin.publish("ack2", "op", f"m{i}")
    c = Client(server.client_url, "ack2", "pw", auto_ack=False)
    rec = Recorder(c)
    await c.connect(timeout=10)
    try:
        await wait_until(lambda: len(rec.messages) == 4, what="4 replayed")
        await c.ack(2)

        async def only_3_4() -> bool:
            return [m.seq for m in await admin.msg("ack2")] == [3, 4]

        await wait_until(only_3_4, what="/msg = [3, 4] after ack(2)")
    finally:
        await c.close()
    # auto_ack off: close sends nothing more.
    assert [m.seq for m in await admin.msg("ack2")] == [3, 4]


@pytest.mark.parametrize("transport", ["websocket", "chunked"])
async def test_msgpack(server: Server, transport: str) -> None:
    admin = AdminClient(server.admin_url)
    await admin.publish("mp1", "op", "offline ü")
    a = Client(server.client_url, "mp1", "pw", transport=transport, codec="msgpack")
    rec = Recorder(a)
    await a.connect(timeout=10)
    try:
        await admin.publish("mp1", "op", "x" * 300)
        await a.send_to_user("mp1", "to myself 🎉")
        await a.subscribe("mpch")
        await a.send_to_channel("mpch", "chan")
        await wait_until(lambda: len(rec.messages) >= 4, what="4 msgpack messages")
        assert bodies(rec.messages) == ["offline ü", "x" * 300, "to myself 🎉", "chan"]
        assert [m.seq for m in rec.messages] == [1, 2, 3, 4]
        assert rec.messages[3].channel == "mpch"
    finally:
        await a.close()


def test_msgpack_over_sse_refused() -> None:
    with pytest.raises(ValueError):
        Client("http://127.0.0.1:1", "u", "p", transport="sse", codec="msgpack")
    # In a fallback list SSE is skipped instead.
    c = Client("http://127.0.0.1:1", "u", "p", transport=["sse", "chunked"], codec="msgpack")
    assert c._kinds == ["chunked"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_replaced_is_not_fought(server: Server, transport: str) -> None:
    first = Client(server.client_url, "rep", "pw", transport=transport)
    r1 = Recorder(first)
    await first.connect(timeout=10)
    second = Client(server.client_url, "rep", "pw", transport="websocket")
    await second.connect(timeout=10)
    try:
        await asyncio.wait_for(first.wait_closed(), 10)
        assert first.close_reason == "replaced"
        assert ("replaced",) in r1.events
        assert ("disconnected", "replaced") in r1.events
        # The newer one stays: the first did not reconnect and take it back.
        admin = AdminClient(server.admin_url)
        r2 = Recorder(second)
        await admin.publish("rep", "op", "to the second")
        await wait_until(lambda: bodies(r2.messages) == ["to the second"], what="second gets it")
        assert second.connected
        assert len(r1.of("connected")) == 1
    finally:
        await first.close()
        await second.close()


async def test_bad_uid_is_fatal(server: Server) -> None:
    c = Client(server.client_url, "bad uid", "pw", transport="chunked")
    rec = Recorder(c)
    with pytest.raises(Exception, match="invalid uid"):
        await c.connect(timeout=10)
    errs = [e[1] for e in rec.of("error")]
    assert errs and isinstance(errs[0], HttpStatusError) and errs[0].status == 400
    assert c.close_reason.startswith("rejected")


def _jwt(secret: str, sub: str, exp: int) -> str:
    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": sub, "exp": exp}).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


async def test_jwt_refresh_callback(make_server: Callable[..., Server]) -> None:
    srv = make_server(extra=["--auth=jwt", "--auth_secret=s3cret"])
    calls: List[float] = []

    async def token() -> str:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return _jwt("wrong", "jw1", int(time.time()) + 60)  # refused: 401, then retried
        return _jwt("s3cret", "jw1", int(time.time()) + 60)

    c = Client(srv.client_url, "jw1", token, transport="chunked", backoff_base=0.05)
    rec = Recorder(c)
    await c.connect(timeout=10)
    try:
        errs = [e[1] for e in rec.of("error")]
        assert isinstance(errs[0], HttpStatusError) and errs[0].status == 401
        assert len(calls) == 2
        # A server-side disconnect: the callback is asked again before the reconnect.
        admin = AdminClient(srv.admin_url)
        await admin.disconnect("jw1")
        await wait_until(lambda: len(rec.of("connected")) == 2, what="reconnect")
        assert len(calls) == 3
        await admin.publish("jw1", "op", "jwt ok")
        await wait_until(lambda: bodies(rec.messages) == ["jwt ok"], what="message")
    finally:
        await c.close()


@pytest.mark.parametrize("transport", ["websocket", "sse", "chunked"])
async def test_resume_after_restart(make_server: Callable[..., Server], transport: str) -> None:
    srv = make_server(storage="embedded")
    admin = AdminClient(srv.admin_url)
    gate = asyncio.Event()
    gate.set()

    async def password() -> str:
        await gate.wait()  # held shut while the test publishes to the disconnected client
        return "pw"

    c = Client(
        srv.client_url,
        "res1",
        password,
        transport=transport,
        ack_interval=30,  # nothing acked before the stop: the restart replays 1..3 again
        ack_batch=1000,
        backoff_base=0.05,
        backoff_cap=0.5,
    )
    rec = Recorder(c)
    await c.connect(timeout=10)
    try:
        for i in range(1, 4):
            await admin.publish("res1", "op", f"m{i}")
        await wait_until(lambda: len(rec.messages) == 3, what="m1..m3")
        gate.clear()
        srv.stop()  # SIGTERM: a graceful stop
        assert srv.proc is not None and srv.proc.returncode == 0
        await wait_until(lambda: not c.connected, what="client sees the stop")
        srv.start()
        admin = AdminClient(srv.admin_url)
        for i in range(4, 7):
            await admin.publish("res1", "op", f"m{i}")
        # Stored, none acked: the reconnect replays 1..6 and the client drops 1..3.
        assert [m.seq for m in await admin.msg("res1")] == [1, 2, 3, 4, 5, 6]
        gate.set()
        await wait_until(lambda: len(rec.of("connected")) == 2, timeout=15, what="reconnect")
        for i in range(7, 10):
            await admin.publish("res1", "op", f"m{i}")
        await wait_until(lambda: len(rec.messages) >= 9, what="m1..m9")
        await asyncio.sleep(0.2)  # a late duplicate would show here
        assert bodies(rec.messages) == [f"m{i}" for i in range(1, 10)]
        assert [m.seq for m in rec.messages] == list(range(1, 10))
        if transport != "sse":  # SSE resumes from Last-Event-ID: no duplicate is sent
            assert c.duplicates_dropped == 3
    finally:
        await c.close()
    # close() flushed the pending ack: nothing left offline.
    assert await admin.msg("res1") == []


@pytest.fixture
def cluster(make_server: Callable[..., Server]) -> List[Server]:
    for attempt in range(3):
        p = free_ports(6)
        nodes = f"n1=127.0.0.1:{p[0]}:{p[1]}:{p[2]},n2=127.0.0.1:{p[3]}:{p[4]}:{p[5]}"
        try:
            n1 = make_server(
                name=f"n1-{attempt}", ports=p[0:3], extra=["--node=n1", f"--nodes={nodes}"]
            )
            n2 = make_server(
                name=f"n2-{attempt}", ports=p[3:6], extra=["--node=n2", f"--nodes={nodes}"]
            )
            return [n1, n2]
        except RuntimeError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def uid_of_n2(cluster: List[Server], prefix: str) -> str:
    """Once the bus is up both ways, a uid that n2 owns (as n1 says)."""
    n1, n2 = cluster
    admin1 = AdminClient(n1.admin_url)

    async def peers_up() -> bool:
        h1 = await admin1.health()
        h2 = await AdminClient(n2.admin_url).health()
        return h1["peers"].get("n2") == "up" and h2["peers"].get("n1") == "up"

    await wait_until(peers_up, timeout=15, what="the bus between n1 and n2 up")
    for i in range(200):
        if await admin1.shard(f"{prefix}{i}") == f"127.0.0.1:{n2.client_port}":
            return f"{prefix}{i}"
    raise AssertionError("no uid owned by n2 among 200")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_follow_303_to_owner(cluster: List[Server], transport: str) -> None:
    n1, n2 = cluster
    admin1 = AdminClient(n1.admin_url)
    uid = await uid_of_n2(cluster, "owned")
    c = Client(n1.client_url, uid, "pw", transport=transport)
    rec = Recorder(c)
    await c.connect(timeout=15)
    try:
        assert rec.of("connected") == [("connected", transport, n2.client_url)]
        await admin1.publish(uid, "op", "via n1")  # routed to n2 over the bus
        await wait_until(lambda: bodies(rec.messages) == ["via n1"], what="message on n2")
    finally:
        await c.close()


@pytest.mark.parametrize(
    "transport,codec",
    [("websocket", "json"), ("websocket", "msgpack"), ("sse", "json"), ("chunked", "msgpack")],
)
async def test_moved_reconnects_to_the_location_and_resumes_once(
    cluster: List[Server], transport: str, codec: str
) -> None:
    n1, n2 = cluster
    admin1 = AdminClient(n1.admin_url)
    uid = await uid_of_n2(cluster, "mover")
    # A long backoff: only the move's immediate reconnect makes this pass in time.
    c = Client(
        n1.client_url, uid, "pw", transport=transport, codec=codec, backoff_base=60, backoff_cap=60
    )
    rec = Recorder(c)
    await c.connect(timeout=15)
    try:
        await admin1.publish(uid, "op", "before the move")
        await wait_until(lambda: bodies(rec.messages) == ["before the move"], what="first")
        # n2 (asked through n1) tells the stream to go to n1, which sends it back to n2, its
        # owner: the client follows the location, then the 303, and resumes from its last ack.
        await admin1.disconnect(uid, location=n1.client_url)
        await admin1.publish(uid, "op", "after the move")
        await wait_until(lambda: len(rec.of("connected")) >= 2, timeout=10, what="reconnected")
        await admin1.publish(uid, "op", "live again")
        want = ["before the move", "after the move", "live again"]
        await wait_until(lambda: bodies(rec.messages) == want, timeout=10, what="all three, once")
        assert [m.seq for m in rec.messages] == [1, 2, 3]
        assert rec.of("moved") == [("moved", f"{n1.client_url}/connect?uid={uid}")]
        assert rec.of("connected")[1] == ("connected", transport, n2.client_url)
    finally:
        await c.close()


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_initial_last_seq(server: Server, transport: str) -> None:
    admin = AdminClient(server.admin_url)
    for i in range(1, 4):
        await admin.publish("ls1", "op", f"m{i}")
    c = Client(server.client_url, "ls1", "pw", transport=transport, last_seq=2, ack_interval=0.05)
    rec = Recorder(c)
    await c.connect(timeout=10)
    try:
        await wait_until(lambda: bodies(rec.messages) == ["m3"], what="only m3")

        async def empty() -> bool:
            return await admin.msg("ls1") == []

        await wait_until(empty, what="acked up to 3")
        # The websocket replay carries 1 and 2 and drops them; SSE resumes after Last-Event-ID.
        assert c.duplicates_dropped == (2 if transport == "websocket" else 0)
    finally:
        await c.close()
