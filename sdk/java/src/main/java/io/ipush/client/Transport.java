package io.ipush.client;

/** How a client stream travels. */
public enum Transport {
  /** RFC 6455 WebSocket: text frames (JSON) or binary frames (MessagePack), both directions. */
  WEBSOCKET,
  /** Server-Sent Events: one-way, JSON only; the client sends with {@code POST /send}. */
  SSE,
  /** The chunked HTTP stream: each message one chunk, both directions. */
  CHUNKED
}
