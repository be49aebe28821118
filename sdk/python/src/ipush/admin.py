"""The admin API client (admin port): publish, sub/unsub, offline messages, shard, stats,
health. Async (:class:`AdminClient`) with a thin blocking wrapper (:class:`SyncAdminClient`)."""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.parse
from typing import Any, Dict, List, Optional, Tuple

from . import _http
from ._http import Endpoint
from .errors import AdminError, ProtocolError
from .protocol import Message, decode_json, error_reason

__all__ = ["AdminClient", "SyncAdminClient"]


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
    ) -> None:
        self._ep = Endpoint.parse(base_url)
        self._timeout = timeout
        self._ssl = ssl_context

    async def _call(
        self,
        method: str,
        path: str,
        params: List[Tuple[str, str]],
        body: Optional[bytes] = None,
    ) -> Any:
        target = path + ("?" + urllib.parse.urlencode(params) if params else "")
        headers = {"Content-Type": "text/plain; charset=utf-8"} if body is not None else {}
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
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise ProtocolError(f"{path}: answer is not JSON: {data[:200]!r}") from None
        if not isinstance(obj, dict) or "result" not in obj:
            if isinstance(obj, dict) and "error" in obj:
                raise AdminError(head.status, str(obj["error"]), data)
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

    async def disconnect(self, uid: str) -> Any:
        """``POST /disconnect?uid=``: ends the user's stream (404 if not connected)."""
        return await self._call("POST", "/disconnect", [("uid", uid)], b"")


def _body(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if not isinstance(body, str):
        raise TypeError("body must be str (or UTF-8 bytes)")
    return body.encode("utf-8")


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
