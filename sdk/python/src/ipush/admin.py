"""The admin API client (admin port): publish (one message or a batch), sub/unsub, offline
messages, shard, stats, health. Async (:class:`AdminClient`) with a thin blocking wrapper
(:class:`SyncAdminClient`)."""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from . import _http
from ._http import Endpoint
from .errors import AdminError, ProtocolError
from .protocol import Message, decode_json, error_reason

__all__ = ["AdminClient", "BatchItem", "BatchResult", "SyncAdminClient"]

DEFAULT_MAX_BATCH_LINES = 10_000  # the server's default --max_batch_lines
DEFAULT_MAX_BATCH_BYTES = 16 << 20  # the server's default --max_batch_bytes


@dataclass(frozen=True)
class BatchItem:
    """One message of :meth:`AdminClient.publish_batch`: exactly one of ``to`` (a user) and
    ``channel``; ``ttl`` and ``idempotency_key`` as for :meth:`AdminClient.publish`."""

    sender: str
    body: str
    to: Optional[str] = None
    channel: Optional[str] = None
    ttl: Optional[int] = None
    idempotency_key: Optional[str] = None


@dataclass(frozen=True)
class BatchResult:
    """The outcome of one batch item: ``result`` (``"ok"``) or ``error`` (an
    :class:`AdminError` with the status and reason ``/pub`` would have answered, or the
    exception of a request that failed as a whole)."""

    result: Any = None
    error: Optional[Exception] = None

    @property
    def ok(self) -> bool:
        return self.error is None


class AdminClient:
    """``AdminClient("http://127.0.0.1:9001")``. Every call returns the ``result`` of the
    server's answer (parsed), and raises :class:`AdminError` (``.status``, ``.reason``) on a
    4xx/5xx ``{"error": reason}``. One connection per call."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        ssl_context: Optional[ssl.SSLContext] = None,
        max_batch_lines: int = DEFAULT_MAX_BATCH_LINES,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    ) -> None:
        self._ep = Endpoint.parse(base_url)
        self._timeout = timeout
        self._ssl = ssl_context
        for name, v in (("max_batch_lines", max_batch_lines), ("max_batch_bytes", max_batch_bytes)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1")
        self._max_lines = max_batch_lines
        self._max_bytes = max_batch_bytes

    async def _request(
        self,
        method: str,
        path: str,
        params: List[Tuple[str, str]],
        body: Optional[bytes],
        content_type: str = "text/plain; charset=utf-8",
    ) -> Tuple[int, bytes]:
        """One request; the answer's status and body, or :class:`AdminError` for a 4xx/5xx."""
        target = path + ("?" + urllib.parse.urlencode(params) if params else "")
        headers = {"Content-Type": content_type} if body is not None else {}
        head, data = await _http.request(
            method,
            self._ep,
            target,
            body=body,
            headers=headers,
            timeout=self._timeout,
            ssl_context=self._ssl,
        )
        if head.status >= 400:
            raise AdminError(head.status, error_reason(data, head.reason), data)
        return head.status, data

    async def _call(
        self,
        method: str,
        path: str,
        params: List[Tuple[str, str]],
        body: Optional[bytes] = None,
    ) -> Any:
        status, data = await self._request(method, path, params, body)
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise ProtocolError(f"{path}: answer is not JSON: {data[:200]!r}") from None
        if not isinstance(obj, dict) or "result" not in obj:
            if isinstance(obj, dict) and "error" in obj:
                raise AdminError(status, str(obj["error"]), data)
            raise ProtocolError(f"{path}: answer has no 'result': {data[:200]!r}")
        return obj["result"]

    @staticmethod
    def _pub_params(ttl: Optional[int], idempotency_key: Optional[str]) -> List[Tuple[str, str]]:
        p: List[Tuple[str, str]] = []
        if ttl is not None:
            if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 0:
                raise ValueError("ttl must be an integer >= 0 (seconds; 0 = not stored)")
            p.append(("ttl", str(ttl)))
        if idempotency_key is not None:
            if not idempotency_key:
                raise ValueError("idempotency_key must not be empty")
            p.append(("idempotency_key", idempotency_key))
        return p

    async def publish(
        self,
        to: str,
        sender: str,
        body: str,
        ttl: Optional[int] = None,
        idempotency_key: Optional[str] = None,
    ) -> Any:
        """``POST /pub?to=&from=[&ttl=][&idempotency_key=]``: a type-3 message to ``to``.

        ``idempotency_key`` is sent as a query parameter: a retry with it within the server's
        window answers the first result and publishes nothing (another body: 422).
        """
        params = [("to", to), ("from", sender)] + self._pub_params(ttl, idempotency_key)
        return await self._call("POST", "/pub", params, _body(body))

    async def publish_channel(
        self,
        channel: str,
        sender: str,
        body: str,
        ttl: Optional[int] = None,
        idempotency_key: Optional[str] = None,
    ) -> Any:
        """``POST /pub?channel=&from=...``: a type-4 message to every member of ``channel``
        (``idempotency_key``: see :meth:`publish`)."""
        params = [("channel", channel), ("from", sender)] + self._pub_params(ttl, idempotency_key)
        return await self._call("POST", "/pub", params, _body(body))

    async def publish_batch(self, items: Sequence[BatchItem]) -> List[BatchResult]:
        """``POST /pub/batch``: many messages, one :class:`BatchResult` per item, in order.

        Items are checked as :meth:`publish` checks its arguments (``ValueError`` or
        ``TypeError`` before anything is sent). A list over ``max_batch_lines`` items or
        ``max_batch_bytes`` bytes goes as several requests, one after the other. A request that
        fails as a whole (network, timeout, a 4xx/5xx) gives its exception to each of its items
        and to every later item, which is not sent (so no later message overtakes it).
        """
        lines = [_batch_line(i, item) for i, item in enumerate(items)]
        out: List[BatchResult] = []
        for chunk in _chunks(lines, self._max_lines, self._max_bytes):
            try:
                out += await self._post_batch(chunk)
            except (AdminError, ProtocolError, OSError, asyncio.TimeoutError) as e:
                out += [BatchResult(error=e)] * (len(lines) - len(out))
                break
        return out

    async def _post_batch(self, lines: List[bytes]) -> List[BatchResult]:
        _, data = await self._request(
            "POST", "/pub/batch", [], b"".join(lines), "application/x-ndjson"
        )
        answers = [a for a in data.split(b"\n") if a.strip()]
        if len(answers) != len(lines):
            raise ProtocolError(f"/pub/batch: {len(answers)} answers to {len(lines)} lines")
        return [_batch_answer(a) for a in answers]

    async def sub(self, uid: str, cid: str) -> Any:
        return await self._call("GET", "/sub", [("uid", uid), ("cid", cid)])

    async def unsub(self, uid: str, cid: str) -> Any:
        return await self._call("GET", "/unsub", [("uid", uid), ("cid", cid)])

    async def msg(self, uid: str) -> List[Message]:
        """``GET /msg?uid=``: the user's offline messages (unacked, unexpired), ascending seq."""
        result = await self._call("GET", "/msg", [("uid", uid)])
        if not isinstance(result, list):
            raise ProtocolError(f"/msg result is not a list: {result!r}")
        out: List[Message] = []
        for item in result:
            if not isinstance(item, str):
                raise ProtocolError(f"/msg item is not a string: {item!r}")
            m = decode_json(item.strip())
            if not isinstance(m, Message):
                raise ProtocolError(f"/msg item is an error object: {item!r}")
            out.append(m)
        return out

    async def shard(self, uid: str) -> str:
        """``GET /shard?uid=``: ``HOST:PORT``, the client address of the uid's node."""
        result = await self._call("GET", "/shard", [("uid", uid)])
        if not isinstance(result, str):
            raise ProtocolError(f"/shard result is not a string: {result!r}")
        return result

    async def stats(self) -> Dict[str, Any]:
        result = await self._call("GET", "/stats", [])
        if not isinstance(result, dict):
            raise ProtocolError(f"/stats result is not an object: {result!r}")
        return result

    async def health(self) -> Dict[str, Any]:
        result = await self._call("GET", "/health", [])
        if not isinstance(result, dict):
            raise ProtocolError(f"/health result is not an object: {result!r}")
        return result

    async def disconnect(self, uid: str, location: Optional[str] = None) -> Any:
        """``POST /disconnect?uid=[&location=]``: ends the user's stream (404 if not
        connected); with ``location`` (another node's origin, ``http://HOST:PORT``) it ends it
        with the move signal instead, and the client reconnects there at once."""
        params = [("uid", uid)] + ([("location", location)] if location is not None else [])
        return await self._call("POST", "/disconnect", params, b"")


def _body(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if not isinstance(body, str):
        raise TypeError("body must be str (or UTF-8 bytes)")
    return body.encode("utf-8")


def _batch_line(i: int, item: BatchItem) -> bytes:
    """``item`` as its NDJSON line (with the newline), after :meth:`AdminClient.publish`'s
    checks."""
    if (item.to is None) == (item.channel is None):
        raise ValueError(f"batch item {i}: give exactly one of to and channel")
    line: Dict[str, Any] = {"to": item.to} if item.to is not None else {"channel": item.channel}
    line["from"] = item.sender
    line["b"] = _body(item.body).decode("utf-8")
    line.update(AdminClient._pub_params(item.ttl, item.idempotency_key))
    if "ttl" in line:
        line["ttl"] = item.ttl
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def _chunks(lines: List[bytes], max_lines: int, max_bytes: int) -> Iterator[List[bytes]]:
    """Consecutive runs of at most ``max_lines`` lines and ``max_bytes`` bytes (a bigger
    line goes alone: the server answers it)."""
    run: List[bytes] = []
    size = 0
    for line in lines:
        if run and (len(run) == max_lines or size + len(line) > max_bytes):
            yield run
            run, size = [], 0
        run.append(line)
        size += len(line)
    if run:
        yield run


def _batch_answer(line: bytes) -> BatchResult:
    """One answer line: ``{"result": ..., "status": 200}`` or ``{"error": ..., "status": N}``."""
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return BatchResult(error=ProtocolError(f"/pub/batch: answer is not JSON: {line[:200]!r}"))
    if not isinstance(obj, dict):
        return BatchResult(error=ProtocolError(f"/pub/batch: answer is not an object: {obj!r}"))
    status = obj.get("status", 200)
    if isinstance(obj.get("error"), str):
        return BatchResult(error=AdminError(int(status), obj["error"], line))
    if "result" not in obj:
        return BatchResult(error=ProtocolError(f"/pub/batch: no 'result' in {line[:200]!r}"))
    return BatchResult(result=obj["result"])


class SyncAdminClient:
    """The same calls, blocking (each runs its own event loop; not for use inside one)."""

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        self._a = AdminClient(base_url, **kwargs)

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self._a, name)
        if name.startswith("_") or not callable(fn):
            raise AttributeError(name)

        def call(*args: Any, **kw: Any) -> Any:
            return asyncio.run(fn(*args, **kw))

        return call
