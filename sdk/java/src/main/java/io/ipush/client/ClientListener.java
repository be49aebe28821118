package io.ipush.client;

/**
 * Events of a {@link Client}. Every method has an empty default. Calls come from the client's own
 * threads (a connection's reader thread or its scheduler), one at a time per connection: return
 * quickly and hand long work to your own executor.
 */
public interface ClientListener {
  /**
   * A user or channel message. Duplicates (seq at or below the highest already delivered) are
   * dropped before this; messages without a seq (ttl 0) always come through.
   */
  default void onMessage(Client client, Message message) {}

  /** A stream is open: its transport and the node's base URL ({@code http://host:port}). */
  default void onConnected(Client client, Transport transport, String nodeUrl) {}

  /** The stream ended: {@code reason} says why ("closed", "replaced", "moved", an error…). */
  default void onDisconnected(Client client, String reason) {}

  /**
   * Something went wrong: an I/O error, a refused connect ({@link ServerErrorException} with its
   * HTTP status), a stream ended by a server error, or bad bytes from the server ({@link
   * ProtocolException}). The client reconnects by itself unless it was closed.
   */
  default void onError(Client client, Throwable error) {}

  /** The server told the client to move; it reconnects to {@code location} at once. */
  default void onMoved(Client client, String location) {}

  /**
   * Another connection for the same uid replaced this one. The client stops (unless {@link
   * ClientOptions.Builder#reconnectOnReplaced(boolean)} is set).
   */
  default void onReplaced(Client client) {}
}
