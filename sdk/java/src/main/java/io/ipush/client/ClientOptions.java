package io.ipush.client;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import javax.net.ssl.SSLSocketFactory;

/** Options of a {@link Client}; build with {@link #builder()}. Immutable. */
public final class ClientOptions {
  final List<Transport> transports;
  final Codec codec;
  final boolean autoAck;
  final long ackDelayMs;
  final int ackBatch;
  final long heartbeatIntervalMs;
  final long backoffBaseMs;
  final long backoffCapMs;
  final long initialLastSeq;
  final boolean reconnectOnReplaced;
  final SSLSocketFactory sslSocketFactory;
  final int connectTimeoutMs;
  final int maxRedirects;
  final long maxMessageBytes;

  private ClientOptions(Builder b) {
    this.transports = Collections.unmodifiableList(new ArrayList<>(b.transports));
    this.codec = b.codec;
    this.autoAck = b.autoAck;
    this.ackDelayMs = b.ackDelayMs;
    this.ackBatch = b.ackBatch;
    this.heartbeatIntervalMs = b.heartbeatIntervalMs;
    this.backoffBaseMs = b.backoffBaseMs;
    this.backoffCapMs = b.backoffCapMs;
    this.initialLastSeq = b.initialLastSeq;
    this.reconnectOnReplaced = b.reconnectOnReplaced;
    this.sslSocketFactory = b.sslSocketFactory;
    this.connectTimeoutMs = b.connectTimeoutMs;
    this.maxRedirects = b.maxRedirects;
    this.maxMessageBytes = b.maxMessageBytes;
  }

  /** The defaults: WebSocket, then SSE, then chunked; JSON; auto-ack; heartbeat 30 s. */
  public static ClientOptions defaults() {
    return builder().build();
  }

  public static Builder builder() {
    return new Builder();
  }

  public List<Transport> transports() {
    return transports;
  }

  public Codec codec() {
    return codec;
  }

  /** Builds {@link ClientOptions}. */
  public static final class Builder {
    private List<Transport> transports =
        Arrays.asList(Transport.WEBSOCKET, Transport.SSE, Transport.CHUNKED);
    private Codec codec = Codec.JSON;
    private boolean autoAck = true;
    private long ackDelayMs = 1000;
    private int ackBatch = 64;
    private long heartbeatIntervalMs = 30_000;
    private long backoffBaseMs = 500;
    private long backoffCapMs = 30_000;
    private long initialLastSeq = 0;
    private boolean reconnectOnReplaced = false;
    private SSLSocketFactory sslSocketFactory;
    private int connectTimeoutMs = 10_000;
    private int maxRedirects = 5;
    private long maxMessageBytes = 16L * 1024 * 1024;

    private Builder() {}

    /** One transport only. */
    public Builder transport(Transport t) {
      return transports(t);
    }

    /**
     * An ordered fallback list: the client starts with the first and moves to the next when a
     * transport is unavailable (WebSocket not upgraded, no event stream); default WebSocket, SSE,
     * chunked. With MessagePack, SSE is skipped (it is text only).
     */
    public Builder transports(Transport... ts) {
      if (ts.length == 0) {
        throw new IllegalArgumentException("at least one transport");
      }
      for (Transport t : ts) {
        if (t == null) {
          throw new IllegalArgumentException("null transport");
        }
      }
      this.transports = Arrays.asList(ts.clone());
      return this;
    }

    /** JSON (default) or MessagePack (WebSocket binary frames or chunks; not SSE). */
    public Builder codec(Codec c) {
      if (c == null) {
        throw new IllegalArgumentException("null codec");
      }
      this.codec = c;
      return this;
    }

    /**
     * Automatic acks (default on): the highest seq delivered is acked {@code delayMs} after the
     * first unacked message, or at once when {@code batch} messages are unacked.
     */
    public Builder autoAck(long delayMs, int batch) {
      if (delayMs < 0 || batch < 1) {
        throw new IllegalArgumentException("ack delay must be >= 0 and batch >= 1");
      }
      this.autoAck = true;
      this.ackDelayMs = delayMs;
      this.ackBatch = batch;
      return this;
    }

    /** Manual acks only: call {@link Client#ack(long)}. */
    public Builder manualAck() {
      this.autoAck = false;
      return this;
    }

    /**
     * Sends {@code {"y":0}} after this much idle time (default 30 s); a stream silent for 3x this
     * is dead and reconnected.
     */
    public Builder heartbeatIntervalMs(long ms) {
      if (ms < 10) {
        throw new IllegalArgumentException("heartbeat interval must be >= 10 ms");
      }
      this.heartbeatIntervalMs = ms;
      return this;
    }

    /**
     * Reconnect backoff with full jitter: sleep a random time in [0, min(cap, base * 2^attempt));
     * defaults 500 ms and 30 s; reset after a successful connect.
     */
    public Builder backoff(long baseMs, long capMs) {
      if (baseMs < 1 || capMs < baseMs) {
        throw new IllegalArgumentException("backoff needs 1 <= base <= cap");
      }
      this.backoffBaseMs = baseMs;
      this.backoffCapMs = capMs;
      return this;
    }

    /**
     * The highest seq the application already has (messages at or below it are dropped; unsigned 64
     * bits).
     */
    public Builder initialLastSeq(long seq) {
      this.initialLastSeq = seq;
      return this;
    }

    /** Reconnect after {@code {"error":"replaced"}} (default false: the other connection wins). */
    public Builder reconnectOnReplaced(boolean yes) {
      this.reconnectOnReplaced = yes;
      return this;
    }

    /** The socket factory for {@code https://} and {@code wss://} URLs (default: the JDK's). */
    public Builder sslSocketFactory(SSLSocketFactory f) {
      this.sslSocketFactory = f;
      return this;
    }

    /** TCP connect plus response head timeout (default 10 s). */
    public Builder connectTimeoutMs(int ms) {
      if (ms < 1) {
        throw new IllegalArgumentException("timeout must be >= 1 ms");
      }
      this.connectTimeoutMs = ms;
      return this;
    }

    /** 303 redirects followed per connect (default 5). */
    public Builder maxRedirects(int n) {
      if (n < 0) {
        throw new IllegalArgumentException("maxRedirects must be >= 0");
      }
      this.maxRedirects = n;
      return this;
    }

    /** Largest message accepted from the server (default 16 MiB). */
    public Builder maxMessageBytes(long n) {
      if (n < 64) {
        throw new IllegalArgumentException("maxMessageBytes must be >= 64");
      }
      this.maxMessageBytes = n;
      return this;
    }

    public ClientOptions build() {
      if (codec == Codec.MSGPACK && transports.size() == 1 && transports.get(0) == Transport.SSE) {
        throw new IllegalArgumentException("MessagePack is not available over SSE (text only)");
      }
      return new ClientOptions(this);
    }
  }
}
