package io.ipush.client;

/**
 * One message of {@link AdminClient#publishBatch}: to a user ({@link #toUser}) or to a channel
 * ({@link #toChannel}), with an optional ttl and idempotency key. Immutable.
 */
public final class BatchItem {
  final String to;
  final String channel;
  final String from;
  final String body;
  final Long ttl;
  final String idempotencyKey;

  private BatchItem(
      String to, String channel, String from, String body, Long ttl, String idempotencyKey) {
    this.to = to;
    this.channel = channel;
    this.from = from;
    this.body = body;
    this.ttl = ttl;
    this.idempotencyKey = idempotencyKey;
  }

  /** A user message to {@code to}, as {@link AdminClient#publish}. */
  public static BatchItem toUser(String to, String from, String body) {
    return new BatchItem(to, null, from, body, null, null);
  }

  /** A message to every member of {@code channel}, as {@link AdminClient#publishChannel}. */
  public static BatchItem toChannel(String channel, String from, String body) {
    return new BatchItem(null, channel, from, body, null, null);
  }

  /** This item with a ttl in seconds (null: the server's default; 0: no seq, not stored). */
  public BatchItem ttl(Long seconds) {
    return new BatchItem(to, channel, from, body, seconds, idempotencyKey);
  }

  /** This item with an idempotency key: a repeat within the server's window publishes nothing. */
  public BatchItem idempotencyKey(String key) {
    return new BatchItem(to, channel, from, body, ttl, key);
  }
}
