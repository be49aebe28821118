"""The push client: one long-lived stream per uid (WebSocket, SSE or chunked), reconnecting
with exponential backoff and full jitter, following 303 and ``moved``, dropping duplicates by
seq, acking in batches and watching heartbeats. Runs as one asyncio task."""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import ssl
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Dict,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

from ._http import Endpoint
from ._transport import (
    TRANSPORTS,
    ConnectParams,
    Stream,
    Target,
    open_stream,
    post_send,
)
from .errors import (
    ConnectError,
    HttpStatusError,
    IpushError,
    NotConnectedError,
    ProtocolError,
    StreamEnded,
    TransportUnavailable,
)
from .protocol import Message, MsgType

__all__ = ["Client", "backoff_delay", "EVENTS"]

log = logging.getLogger("ipush")

Password = Union[str, Callable[[], Union[str, Awaitable[str]]]]
Handler = Callable[..., Any]

#: Event names accepted by :meth:`Client.on`, with the handler's arguments:
#: ``message(msg)``, ``connected(transport, node_url)``, ``disconnected(reason)``,
#: ``error(exc)``, ``moved(location)``, ``replaced()``, ``closed(reason)``.
EVENTS = ("message", "connected", "disconnected", "error", "moved", "replaced", "closed")

_END = object()


def backoff_delay(
    attempt: int, base: float = 0.5, cap: float = 30.0, rng: Optional[random.Random] = None
) -> float:
    """Full jitter: a uniform draw in ``[0, min(cap, base * 2**attempt)]``."""
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    ceiling = cap if attempt >= 64 else min(cap, base * (2.0**attempt))
    return (rng or random).uniform(0.0, ceiling)


class Client:
    """An ipush client for one uid.

    ``password`` is a string, or a callable (plain or async) returning one: it is called
    before every (re)connect, so a JWT (``--auth=jwt``) can be refreshed there.

    ``transport`` is ``"websocket"`` (default), ``"sse"``, ``"chunked"``, or an ordered list
    tried in turn when one cannot be set up (the upgrade refused, a proxy that does not
    pass it); the one that worked is kept for reconnects. SSE carries JSON only, so with
    ``codec="msgpack"`` it is skipped in a list and refused alone.

    Use ``async with Client(...) as c`` or ``await c.connect()`` ... ``await c.close()``;
    read messages with ``c.on("message", handler)`` or ``async for m in c.messages()``.
    """

    def __init__(
        self,
        base_url: str,
        uid: str,
        password: Password,
        *,
        transport: Union[str, Sequence[str]] = "websocket",
        codec: str = "json",
        auto_ack: bool = True,
        ack_interval: float = 0.5,
        ack_batch: int = 64,
        heartbeat_interval: Optional[float] = 30.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        last_seq: int = 0,
        reconnect_on_replaced: bool = False,
        connect_timeout: float = 10.0,
        max_message_bytes: int = 16 * 1024 * 1024,
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        if not isinstance(uid, str) or not uid:
            raise ValueError("uid must be a non-empty string")
        if not (isinstance(password, str) or callable(password)):
            raise TypeError("password must be a string or a callable returning one")
        if codec not in ("json", "msgpack"):
            raise ValueError(f"codec must be 'json' or 'msgpack', not {codec!r}")
        kinds = [transport] if isinstance(transport, str) else list(transport)
        if not kinds:
            raise ValueError("transport list is empty")
        for k in kinds:
            if k not in TRANSPORTS:
                raise ValueError(f"unknown transport {k!r}: use one of {', '.join(TRANSPORTS)}")
        if codec == "msgpack":
            if kinds == ["sse"]:
                raise ValueError("SSE carries JSON only: use codec='json' or another transport")
            kinds = [k for k in kinds if k != "sse"]
        if ack_interval <= 0 or ack_batch < 1:
            raise ValueError("ack_interval must be > 0 and ack_batch >= 1")
        if heartbeat_interval is not None and heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be > 0 (or None to turn it off)")
        if backoff_base <= 0 or backoff_cap < backoff_base:
            raise ValueError("need 0 < backoff_base <= backoff_cap")
        if last_seq < 0:
            raise ValueError("last_seq must be >= 0")
        self._base = Target(Endpoint.parse(base_url))
        self.uid = uid
        self._password_src = password
        self._password: Optional[str] = password if isinstance(password, str) else None
        self._kinds: List[str] = kinds
        self._sticky = 0
        self.codec = codec
        self.auto_ack = auto_ack
        self._ack_interval = ack_interval
        self._ack_batch = ack_batch
        self._hb = heartbeat_interval
        self._backoff = (backoff_base, backoff_cap)
        self._last_seq = last_seq
        self._reconnect_on_replaced = reconnect_on_replaced
        self._timeout = connect_timeout
        self._max_bytes = max_message_bytes
        self._ssl = ssl_context
        self._handlers: Dict[str, List[Handler]] = {e: [] for e in EVENTS}
        self._queues: Set[asyncio.Queue[Any]] = set()
        self._stream: Optional[Stream] = None
        self._last_target: Target = self._base
        self._task: Optional[asyncio.Task[None]] = None
        self._first: Optional[asyncio.Future[None]] = None
        self._closed_ev: Optional[asyncio.Event] = None  # made on first use, inside the loop
        self._closing = False
        self._close_reason = ""
        self._last_recv = 0.0
        self._last_send = 0.0
        self._ack_pending = 0
        self._ack_sent = 0
        self._ack_count = 0
        self._ack_timer: Optional[asyncio.TimerHandle] = None
        self._ack_lock: Optional[asyncio.Lock] = None
        self._bg: Set[asyncio.Task[Any]] = set()
        #: Messages dropped because their seq was not above the highest delivered.
        self.duplicates_dropped = 0

    @property
    def _closed(self) -> asyncio.Event:
        if self._closed_ev is None:
            self._closed_ev = asyncio.Event()
        return self._closed_ev

    # ---- public state ------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The highest seq delivered to the application."""
        return self._last_seq

    @property
    def connected(self) -> bool:
        return self._stream is not None

    @property
    def transport(self) -> Optional[str]:
        return self._stream.transport if self._stream else None

    @property
    def node_url(self) -> Optional[str]:
        return self._stream.target.node_url if self._stream else None

    # ---- events ------------------------------------------------------------------------

    def on(self, event: str, handler: Optional[Handler] = None) -> Any:
        """Registers ``handler`` (plain or async) for ``event``; usable as a decorator."""
        if event not in self._handlers:
            raise ValueError(f"unknown event {event!r}: use one of {', '.join(EVENTS)}")

        def register(h: Handler) -> Handler:
            self._handlers[event].append(h)
            return h

        return register(handler) if handler is not None else register

    def off(self, event: str, handler: Handler) -> None:
        if handler in self._handlers.get(event, []):
            self._handlers[event].remove(handler)

    async def _emit(self, event: str, *args: Any) -> None:
        for h in list(self._handlers[event]):
            try:
                r = h(*args)
                if inspect.isawaitable(r):
                    await r
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ipush: %s handler raised", event)

    async def messages(self) -> AsyncIterator[Message]:
        """Every message delivered from now on, until the client closes."""
        q: asyncio.Queue[Any] = asyncio.Queue()
        self._queues.add(q)
        try:
            while True:
                if self._closed.is_set() and q.empty():
                    return
                item = await q.get()
                if item is _END:
                    return
                yield item
        finally:
            self._queues.discard(q)

    # ---- life cycle --------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def start(self) -> None:
        """Starts the connection task without waiting for it."""
        if self._task is None:
            if self._closed.is_set():
                raise IpushError("client is closed")
            loop = asyncio.get_running_loop()
            self._first = loop.create_future()
            self._ack_lock = asyncio.Lock()
            self._task = loop.create_task(self._run(), name=f"ipush-client-{self.uid}")

    async def connect(self, timeout: Optional[float] = None) -> None:
        """Starts the client and waits for the first stream. Raises the error that stopped
        it for good (e.g. a 400), or TimeoutError after ``timeout`` (it keeps trying)."""
        self.start()
        assert self._first is not None
        await asyncio.wait_for(asyncio.shield(self._first), timeout)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    @property
    def close_reason(self) -> str:
        return self._close_reason

    async def close(self) -> None:
        """Sends any pending ack, closes the stream and stops reconnecting."""
        if self._closed.is_set():
            return
        task = self._task
        if self._closing and task is not None and task is not asyncio.current_task():
            await self._closed.wait()
            return
        self._closing = True
        if self._ack_timer is not None:
            self._ack_timer.cancel()
        if self._stream is not None and self._ack_pending > self._ack_sent:
            try:
                await asyncio.wait_for(self._flush_acks(), 2)
            except Exception:
                pass
        if task is not None and task is asyncio.current_task():
            # Called from a handler: the loop ends when the handler returns.
            if self._stream is not None:
                await self._stream.close()
            return
        if task is not None:
            task.cancel()
            try:
                await task
            except BaseException:
                pass
        for t in list(self._bg):
            t.cancel()
        await self._finish("closed")

    async def _finish(self, reason: str) -> None:
        if self._closed.is_set():
            return
        self._close_reason = reason
        self._closing = True
        self._stream = None
        if self._ack_timer is not None:
            self._ack_timer.cancel()
        if self._first is not None and not self._first.done():
            self._first.set_exception(IpushError(f"client closed before connecting: {reason}"))
            self._first.exception()  # mark retrieved: connect() may never be awaited
        self._closed.set()
        for q in list(self._queues):
            q.put_nowait(_END)
        await self._emit("closed", reason)

    # ---- sending -----------------------------------------------------------------------

    async def subscribe(self, cid: str) -> None:
        await self._send({"y": int(MsgType.SUBSCRIBE), "f": self.uid, "c": _nonempty("cid", cid)})

    async def unsubscribe(self, cid: str) -> None:
        await self._send({"y": int(MsgType.UNSUBSCRIBE), "f": self.uid, "c": _nonempty("cid", cid)})

    async def send_to_user(self, to: str, body: str) -> None:
        await self._send(
            {"y": int(MsgType.USER), "f": self.uid, "t": _nonempty("to", to), "b": _str(body)}
        )

    async def send_to_channel(self, cid: str, body: str) -> None:
        await self._send(
            {"y": int(MsgType.CHANNEL), "f": self.uid, "c": _nonempty("cid", cid), "b": _str(body)}
        )

    async def ack(self, seq: int) -> None:
        """Acks every message up to ``seq`` now (the server keeps the max)."""
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise ValueError("seq must be a positive integer")
        self._ack_pending = max(self._ack_pending, seq)
        await self._send({"y": int(MsgType.ACK), "f": self.uid, "s": seq})
        self._ack_sent = max(self._ack_sent, seq)

    async def _send(self, obj: Dict[str, Any]) -> None:
        """On the stream when it is two-way; else through ``POST /send`` (SSE, or while
        reconnecting)."""
        if self._closed.is_set():
            raise NotConnectedError("client is closed")
        stream = self._stream
        if stream is not None and not stream.one_way:
            await stream.send(obj)
            self._last_send = asyncio.get_running_loop().time()
            return
        target = stream.target if stream is not None else self._last_target
        password = self._password if self._password is not None else await self._credentials()
        await post_send(target, self._params(password), obj)

    # ---- acks --------------------------------------------------------------------------

    def _note_delivered(self, seq: int) -> None:
        if seq > self._ack_pending:
            self._ack_pending = seq
        self._ack_count += 1
        if self._ack_count >= self._ack_batch:
            self._spawn_flush()
        elif self._ack_timer is None:
            loop = asyncio.get_running_loop()
            self._ack_timer = loop.call_later(self._ack_interval, self._spawn_flush)

    def _spawn_flush(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        self._ack_count = 0
        if self._closed.is_set():
            return
        t = asyncio.get_running_loop().create_task(self._flush_acks())
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    async def _flush_acks(self) -> None:
        assert self._ack_lock is not None
        async with self._ack_lock:
            seq = self._ack_pending
            if seq <= self._ack_sent or self._stream is None:
                return  # nothing new, or offline: sent after the next connect
            try:
                await self._send({"y": int(MsgType.ACK), "f": self.uid, "s": seq})
                self._ack_sent = max(self._ack_sent, seq)
            except Exception as e:
                log.debug("ipush: ack %d not sent (%r); retried after reconnect", seq, e)

    # ---- the connection loop -----------------------------------------------------------

    async def _credentials(self) -> str:
        src = self._password_src
        if isinstance(src, str):
            return src
        value = src()
        if inspect.isawaitable(value):
            value = await value
        if not isinstance(value, str) or not value:
            raise ConnectError("the password callback returned no non-empty string")
        self._password = value
        return value

    def _params(self, password: str) -> ConnectParams:
        return ConnectParams(
            uid=self.uid,
            password=password,
            codec=self.codec,
            last_event_id=self._last_seq,
            timeout=self._timeout,
            max_message_bytes=self._max_bytes,
            ssl_context=self._ssl,
        )

    async def _open(self, target: Target) -> Stream:
        params = self._params(await self._credentials())
        n = len(self._kinds)
        refused: List[str] = []
        for i in range(n):
            idx = (self._sticky + i) % n
            kind = self._kinds[idx]
            try:
                stream = await open_stream(kind, target, params)
            except TransportUnavailable as e:
                refused.append(f"{kind}: {e}")
                log.info("ipush: %s unavailable (%s), trying the next transport", kind, e)
                continue
            self._sticky = idx
            return stream
        raise TransportUnavailable("no transport could be set up: " + "; ".join(refused))

    async def _run(self) -> None:
        attempt = 0
        override: Optional[Target] = None
        try:
            while not self._closing:
                try:
                    stream = await self._open(override or self._base)
                except asyncio.CancelledError:
                    raise
                except HttpStatusError as e:
                    await self._emit("error", e)
                    if e.status == 400:  # a bad uid or option: retrying cannot help
                        await self._finish(f"rejected: {e.reason}")
                        return
                    override = None
                    await self._backoff_sleep(attempt)
                    attempt += 1
                    continue
                except Exception as e:
                    await self._emit(
                        "error",
                        e if isinstance(e, IpushError) else ConnectError(f"connect failed: {e!r}"),
                    )
                    override = None
                    await self._backoff_sleep(attempt)
                    attempt += 1
                    continue
                override = None
                attempt = 0
                if self._closing:
                    await stream.close()
                    break
                reason, location, err = await self._session(stream)
                if self._closing:
                    break
                if location is not None:
                    await self._emit("disconnected", "moved")
                    await self._emit("moved", location)
                    try:
                        override = Target.from_location(location, stream.target)
                    except ValueError as e:
                        await self._emit("error", ProtocolError(f"bad moved location: {e}"))
                    continue  # no backoff for a move
                if err is not None:
                    await self._emit("error", err)
                await self._emit("disconnected", reason)
                if reason == "replaced":
                    await self._emit("replaced")
                    if not self._reconnect_on_replaced:
                        await self._finish("replaced")
                        return
                await self._backoff_sleep(attempt)
                attempt += 1
        finally:
            self._stream = None
            await self._finish("closed" if self._closing else "stopped")

    async def _backoff_sleep(self, attempt: int) -> None:
        base, cap = self._backoff
        await asyncio.sleep(backoff_delay(attempt, base, cap))

    async def _session(self, stream: Stream) -> Tuple[str, Optional[str], Optional[Exception]]:
        loop = asyncio.get_running_loop()
        self._last_recv = self._last_send = loop.time()
        self._stream = stream
        self._last_target = stream.target
        await self._emit("connected", stream.transport, stream.target.node_url)
        if self._first is not None and not self._first.done():
            self._first.set_result(None)
        if self._ack_pending > self._ack_sent:
            self._spawn_flush()
        reader = loop.create_task(self._read_loop(stream))
        watch = loop.create_task(self._watch(stream))
        try:
            done, _ = await asyncio.wait({reader, watch}, return_when=asyncio.FIRST_COMPLETED)
            result = (reader if reader in done else watch).result()
        finally:
            self._stream = None
            for t in (reader, watch):
                t.cancel()
            await asyncio.gather(reader, watch, return_exceptions=True)
            await stream.close()
        return result

    async def _read_loop(self, stream: Stream) -> Tuple[str, Optional[str], Optional[Exception]]:
        loop = asyncio.get_running_loop()
        while True:
            try:
                msg = await stream.recv()
            except StreamEnded as e:
                return e.reason, (e.location if e.reason == "moved" else None), None
            except ProtocolError as e:
                return "protocol error", None, e
            except (OSError, ssl.SSLError) as e:
                return f"connection lost: {e!r}", None, None
            self._last_recv = loop.time()
            if msg.type == MsgType.HEARTBEAT:
                continue
            if msg.seq is not None:
                if msg.seq <= self._last_seq:
                    self.duplicates_dropped += 1
                    if self.auto_ack:
                        self._note_delivered(self._last_seq)
                    continue
                self._last_seq = msg.seq
            for q in list(self._queues):
                q.put_nowait(msg)
            await self._emit("message", msg)
            if msg.seq is not None and self.auto_ack:
                self._note_delivered(msg.seq)

    async def _watch(self, stream: Stream) -> Tuple[str, Optional[str], Optional[Exception]]:
        """Sends ``{"y":0}`` after ``heartbeat_interval`` without sending; a stream silent for
        3x the interval is dead."""
        if self._hb is None:
            await asyncio.Event().wait()  # never returns; cancelled with the session
        assert self._hb is not None
        interval = self._hb
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            dead_at = self._last_recv + 3 * interval
            if now >= dead_at:
                return "heartbeat timeout", None, None
            wake = dead_at
            if not stream.one_way:
                next_hb = self._last_send + interval
                if now >= next_hb:
                    try:
                        # Bounded: a peer that stopped reading must not stall the watch.
                        await asyncio.wait_for(
                            stream.send({"y": int(MsgType.HEARTBEAT)}), max(interval, 1.0)
                        )
                    except asyncio.TimeoutError:
                        return "heartbeat timeout", None, None
                    except (OSError, IpushError) as e:
                        return f"connection lost: {e!r}", None, None
                    self._last_send = now = loop.time()
                    next_hb = now + interval
                wake = min(wake, next_hb)
            await asyncio.sleep(max(0.005, wake - now))


def _nonempty(name: str, v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError(f"{name} must be a non-empty string")
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError("body must be a str")
    return v
