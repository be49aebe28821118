package io.ipush.client;

import java.math.BigInteger;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Objects;

/**
 * One ipush message: keys {@code y} type, {@code f} from, {@code t} to, {@code c} channel, {@code
 * u} user, {@code b} body, {@code s} seq. Absent keys are {@code null}. Immutable.
 */
public final class Message {
  public static final int HEARTBEAT = 0;
  public static final int SUBSCRIBE = 1;
  public static final int UNSUBSCRIBE = 2;
  public static final int USER_MESSAGE = 3;
  public static final int CHANNEL_MESSAGE = 4;
  public static final int ACK = 5;

  private final int type;
  private final String from;
  private final String to;
  private final String channel;
  private final String user;
  private final String body;
  private final Long seq;

  public Message(
      int type, String from, String to, String channel, String user, String body, Long seq) {
    this.type = type;
    this.from = from;
    this.to = to;
    this.channel = channel;
    this.user = user;
    this.body = body;
    this.seq = seq;
  }

  public static Message heartbeat() {
    return new Message(HEARTBEAT, null, null, null, null, null, null);
  }

  public static Message subscribe(String channel) {
    return new Message(SUBSCRIBE, null, null, req(channel, "channel"), null, null, null);
  }

  public static Message unsubscribe(String channel) {
    return new Message(UNSUBSCRIBE, null, null, req(channel, "channel"), null, null, null);
  }

  public static Message toUser(String to, String body) {
    return new Message(USER_MESSAGE, null, req(to, "to"), null, null, req(body, "body"), null);
  }

  public static Message toChannel(String channel, String body) {
    return new Message(
        CHANNEL_MESSAGE, null, null, req(channel, "channel"), null, req(body, "body"), null);
  }

  /** An ack of everything up to {@code seq} (read as unsigned 64 bits). */
  public static Message ack(long seq) {
    return new Message(ACK, null, null, null, null, null, seq);
  }

  private static String req(String v, String name) {
    if (v == null) {
      throw new IllegalArgumentException(name + " must not be null");
    }
    return v;
  }

  /**
   * {@code y}: 0 heartbeat, 1 subscribe, 2 unsubscribe, 3 user message, 4 channel message, 5 ack.
   */
  public int type() {
    return type;
  }

  public String from() {
    return from;
  }

  public String to() {
    return to;
  }

  public String channel() {
    return channel;
  }

  public String user() {
    return user;
  }

  public String body() {
    return body;
  }

  /**
   * The per-user sequence number, or {@code null} (heartbeats, ttl 0 messages). Seqs are unsigned
   * 64-bit numbers: above 2^63-1 the long is negative; compare with {@link
   * Long#compareUnsigned(long, long)} and print with {@link Long#toUnsignedString(long)}.
   */
  public Long seq() {
    return seq;
  }

  /** The message as an ordered map (y, f, t, c, u, b, s), absent keys left out. */
  public Map<String, Object> toMap() {
    Map<String, Object> m = new LinkedHashMap<>();
    m.put("y", (long) type);
    if (from != null) {
      m.put("f", from);
    }
    if (to != null) {
      m.put("t", to);
    }
    if (channel != null) {
      m.put("c", channel);
    }
    if (user != null) {
      m.put("u", user);
    }
    if (body != null) {
      m.put("b", body);
    }
    if (seq != null) {
      m.put("s", seq >= 0 ? (Object) seq : new BigInteger(Long.toUnsignedString(seq)));
    }
    return m;
  }

  /**
   * Reads a message from a decoded map (JSON or MessagePack); unknown keys are ignored.
   *
   * @throws ProtocolException when {@code y} is missing or a key has the wrong type
   */
  public static Message fromMap(Map<String, Object> m) throws ProtocolException {
    Object y = m.get("y");
    if (!(y instanceof Long)) {
      throw new ProtocolException("message without an integer \"y\": " + Json.write(m));
    }
    long t = (Long) y;
    if (t < 0 || t > Integer.MAX_VALUE) {
      throw new ProtocolException("message type out of range: " + t);
    }
    return new Message(
        (int) t,
        str(m, "f"),
        str(m, "t"),
        str(m, "c"),
        str(m, "u"),
        str(m, "b"),
        seqOf(m.get("s")));
  }

  private static String str(Map<String, Object> m, String k) throws ProtocolException {
    Object v = m.get(k);
    if (v == null) {
      return null;
    }
    if (!(v instanceof String)) {
      throw new ProtocolException("message key \"" + k + "\" is not a string");
    }
    return (String) v;
  }

  private static Long seqOf(Object v) throws ProtocolException {
    if (v == null) {
      return null;
    }
    if (v instanceof Long && (Long) v >= 0) {
      return (Long) v;
    }
    if (v instanceof BigInteger
        && ((BigInteger) v).signum() >= 0
        && ((BigInteger) v).bitLength() <= 64) {
      return ((BigInteger) v).longValue();
    }
    throw new ProtocolException("message key \"s\" is not an unsigned 64-bit integer");
  }

  @Override
  public boolean equals(Object o) {
    if (this == o) {
      return true;
    }
    if (!(o instanceof Message)) {
      return false;
    }
    Message x = (Message) o;
    return type == x.type
        && Objects.equals(from, x.from)
        && Objects.equals(to, x.to)
        && Objects.equals(channel, x.channel)
        && Objects.equals(user, x.user)
        && Objects.equals(body, x.body)
        && Objects.equals(seq, x.seq);
  }

  @Override
  public int hashCode() {
    return Objects.hash(type, from, to, channel, user, body, seq);
  }

  @Override
  public String toString() {
    return Json.write(toMap());
  }
}
