package io.ipush.client;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.URI;
import java.net.URISyntaxException;
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.ReentrantLock;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.SSLSocketFactory;

/**
 * An ipush client: one long-lived stream for one uid, over WebSocket (default), Server-Sent Events
 * or the chunked HTTP stream, on plain {@link Socket}s (no {@code java.net.http}, so it runs on
 * Android).
 *
 * <p>It follows {@code 303 See Other} and the {@code moved} signal, reconnects with exponential
 * backoff and full jitter, tracks the highest seq delivered and drops duplicates, acks (batched
 * automatically or by hand), sends and watches heartbeats. Threads: one reader thread per
 * connection and one scheduler thread (heartbeats, acks, backoff). Every public method is
 * thread-safe.
 */
public final class Client implements AutoCloseable {
  private static final String USER_AGENT = "ipush-java/0.1";

  private final URI base;
  private final String uid;
  private final TokenProvider tokens;

  /** True when built with a fixed password: a 401 then stops (retrying cannot help). */
  private final boolean fixedPassword;

  private final ClientOptions opt;
  private final ClientListener listener;
  private final List<Transport> transports;
  private final ScheduledExecutorService scheduler;
  private final Random secure = new SecureRandom();

  private final Object lock = new Object();
  // Guarded by lock.
  private boolean started;
  private boolean closed;
  private boolean stopped;
  private Connection conn;
  private long lastSeq;
  private long ackedSeq;
  private int unacked;
  private ScheduledFuture<?> ackTimer;
  private int attempt;
  private int transportIndex;
  private URI movedTo;

  /** Moves since the last message: a node that keeps sending "moved" gets backoff after 5. */
  private int moves;

  /** A client with a fixed password (for {@code --auth=none}, or a long-lived token). */
  public Client(
      String baseUrl, String uid, String password, ClientOptions options, ClientListener listener) {
    this(baseUrl, uid, fixed(password), options, listener, true);
  }

  /**
   * A client whose password comes from {@code tokens} before every (re)connect, e.g. a JWT that the
   * application refreshes.
   */
  public Client(
      String baseUrl,
      String uid,
      TokenProvider tokens,
      ClientOptions options,
      ClientListener listener) {
    this(baseUrl, uid, tokens, options, listener, false);
  }

  private Client(
      String baseUrl,
      String uid,
      TokenProvider tokens,
      ClientOptions options,
      ClientListener listener,
      boolean fixedPassword) {
    this.fixedPassword = fixedPassword;
    if (uid == null || uid.isEmpty()) {
      throw new IllegalArgumentException("uid must not be empty");
    }
    if (tokens == null) {
      throw new IllegalArgumentException("a password or token provider is required");
    }
    this.base = parseBase(baseUrl);
    this.uid = uid;
    this.tokens = tokens;
    this.opt = options == null ? ClientOptions.defaults() : options;
    this.listener = listener == null ? new ClientListener() {} : listener;
    List<Transport> ts = new ArrayList<>();
    for (Transport t : opt.transports) {
      if (!(t == Transport.SSE && opt.codec == Codec.MSGPACK)) {
        ts.add(t);
      }
    }
    if (ts.isEmpty()) {
      throw new IllegalArgumentException("MessagePack is not available over SSE (text only)");
    }
    this.transports = ts;
    this.lastSeq = opt.initialLastSeq;
    this.ackedSeq = 0;
    this.scheduler =
        Executors.newSingleThreadScheduledExecutor(
            r -> {
              Thread t = new Thread(r, "ipush-scheduler-" + uid);
              t.setDaemon(true);
              return t;
            });
  }

  private static TokenProvider fixed(String password) {
    if (password == null || password.isEmpty()) {
      throw new IllegalArgumentException("password must not be empty");
    }
    return () -> password;
  }

  private static URI parseBase(String url) {
    if (url == null) {
      throw new IllegalArgumentException("base URL is required");
    }
    try {
      URI u = new URI(url);
      String scheme = u.getScheme() == null ? "" : u.getScheme().toLowerCase(Locale.ROOT);
      if (!scheme.equals("http")
          && !scheme.equals("https")
          && !scheme.equals("ws")
          && !scheme.equals("wss")) {
        throw new IllegalArgumentException("base URL must be http(s):// or ws(s)://: " + url);
      }
      if (u.getHost() == null) {
        throw new IllegalArgumentException("base URL has no host: " + url);
      }
      return u;
    } catch (URISyntaxException e) {
      throw new IllegalArgumentException("bad base URL: " + url, e);
    }
  }

  /**
   * Starts connecting (in the background); events go to the listener. Idempotent while running;
   * after the stream was replaced (and the client stopped), starts it again.
   */
  public void connect() {
    synchronized (lock) {
      if (closed) {
        throw new IllegalStateException("client is closed");
      }
      if (started && !stopped) {
        return;
      }
      started = true;
      stopped = false;
    }
    schedule(0);
  }

  /** True while a stream is open. */
  public boolean isConnected() {
    Connection c;
    synchronized (lock) {
      c = conn;
    }
    return c != null && c.open;
  }

  /** The transport of the open stream, or {@code null}. */
  public Transport transport() {
    Connection c;
    synchronized (lock) {
      c = conn;
    }
    return c != null && c.open ? c.transport : null;
  }

  /** The highest seq delivered to the application. */
  public long lastSeq() {
    synchronized (lock) {
      return lastSeq;
    }
  }

  public String uid() {
    return uid;
  }

  public void subscribe(String channel) throws IOException {
    send(Message.subscribe(channel));
  }

  public void unsubscribe(String channel) throws IOException {
    send(Message.unsubscribe(channel));
  }

  public void sendToUser(String to, String body) throws IOException {
    send(Message.toUser(to, body));
  }

  public void sendToChannel(String channel, String body) throws IOException {
    send(Message.toChannel(channel, body));
  }

  /**
   * Acks everything up to {@code seq} ({@code last_ack = max(last_ack, seq)} on the server). An ack
   * not above one already sent is not sent again.
   */
  public void ack(long seq) throws IOException {
    synchronized (lock) {
      if (Long.compareUnsigned(seq, ackedSeq) <= 0) {
        return;
      }
    }
    send(Message.ack(seq));
    synchronized (lock) {
      if (Long.compareUnsigned(seq, ackedSeq) > 0) {
        ackedSeq = seq;
      }
      if (Long.compareUnsigned(ackedSeq, lastSeq) >= 0) {
        unacked = 0;
      }
    }
  }

  /**
   * Sends one message on the open stream (over SSE: {@code POST /send} to the node).
   *
   * @throws IOException when no stream is open or the write fails
   */
  public void send(Message m) throws IOException {
    Connection c;
    synchronized (lock) {
      c = conn;
    }
    if (c == null || !c.open) {
      throw new IOException("not connected");
    }
    if (c.transport == Transport.SSE) {
      postSend(c, m);
    } else {
      c.writeMessage(m);
    }
  }

  /** Ends the stream (after a last ack of what was delivered) and stops reconnecting. */
  @Override
  public void close() {
    Connection c;
    long flush = 0;
    synchronized (lock) {
      if (closed) {
        return;
      }
      closed = true;
      c = conn;
      if (ackTimer != null) {
        ackTimer.cancel(false);
        ackTimer = null;
      }
      if (opt.autoAck && Long.compareUnsigned(lastSeq, ackedSeq) > 0) {
        flush = lastSeq;
      }
    }
    if (c != null) {
      if (c.open && flush != 0 && c.transport != Transport.SSE) {
        try {
          c.writeMessage(Message.ack(flush));
        } catch (IOException ignored) {
          // the server replays unacked messages on the next connect
        }
      }
      c.shutdown();
      if (Thread.currentThread() != c.thread) {
        try {
          c.thread.join(2000);
        } catch (InterruptedException e) {
          Thread.currentThread().interrupt();
        }
      }
    }
    scheduler.shutdownNow();
  }

  // ---- internals ------------------------------------------------------------------------

  /** Full-jitter backoff: a random delay in [0, min(cap, base * 2^attempt)). */
  static long backoffDelay(long baseMs, long capMs, int attempt, Random r) {
    long ceiling = capMs;
    if (attempt < 40) {
      long grow = baseMs << attempt;
      if (grow > 0 && grow < capMs) {
        ceiling = grow;
      }
    }
    return (long) (r.nextDouble() * ceiling);
  }

  private void schedule(long delayMs) {
    try {
      scheduler.schedule(this::startConnection, delayMs, TimeUnit.MILLISECONDS);
    } catch (java.util.concurrent.RejectedExecutionException e) {
      // closed meanwhile
    }
  }

  private void startConnection() {
    Connection c;
    synchronized (lock) {
      if (closed || stopped || conn != null) {
        return;
      }
      URI target = movedTo != null ? movedTo : base;
      movedTo = null;
      c = new Connection(target, transports.get(transportIndex), opt.codec);
      conn = c;
    }
    c.thread.start();
  }

  private enum Kind {
    /** The client was closed. */
    CLOSED,
    /** The server ended the stream (shutdown, close frame, EOF). */
    END,
    /** An error: I/O, refused connect, bad bytes, a stream-ending server error. */
    ERROR,
    MOVED,
    REPLACED,
    /** This transport is not available here: try the next one. */
    UNAVAILABLE
  }

  private static final class Outcome {
    final Kind kind;
    final String reason;
    final Throwable error;
    final String location;

    Outcome(Kind kind, String reason, Throwable error, String location) {
      this.kind = kind;
      this.reason = reason;
      this.error = error;
      this.location = location;
    }

    static Outcome error(Throwable t) {
      return new Outcome(Kind.ERROR, String.valueOf(t.getMessage()), t, null);
    }
  }

  /** Called on a connection's reader thread once it is over. */
  private void ended(Connection c, Outcome o) {
    boolean wasOpen = c.open;
    c.open = false;
    long delay = -1;
    boolean userClosed;
    URI moveTarget = null;
    Throwable moveError = null;
    synchronized (lock) {
      if (conn == c) {
        conn = null;
      }
      userClosed = closed;
      if (!closed) {
        switch (o.kind) {
          case MOVED:
            try {
              moveTarget = o.location == null ? base : resolve(c.node, o.location);
              movedTo = moveTarget;
              delay =
                  ++moves <= 5
                      ? 0
                      : backoffDelay(opt.backoffBaseMs, opt.backoffCapMs, attempt++, rnd());
            } catch (IllegalArgumentException e) {
              moveError = e;
              delay = backoffDelay(opt.backoffBaseMs, opt.backoffCapMs, attempt++, rnd());
            }
            break;
          case REPLACED:
            if (opt.reconnectOnReplaced) {
              delay = backoffDelay(opt.backoffBaseMs, opt.backoffCapMs, attempt++, rnd());
            } else {
              stopped = true;
            }
            break;
          case UNAVAILABLE:
            if (transportIndex + 1 < transports.size()) {
              transportIndex++;
              delay = 0;
            } else {
              delay = backoffDelay(opt.backoffBaseMs, opt.backoffCapMs, attempt++, rnd());
            }
            break;
          default:
            if (fixedPassword
                && o.error instanceof ServerErrorException
                && ((ServerErrorException) o.error).status() == 401) {
              stopped = true; // the same password would be refused again: connect() retries
            } else {
              delay = backoffDelay(opt.backoffBaseMs, opt.backoffCapMs, attempt++, rnd());
            }
        }
      }
    }
    if (userClosed) {
      if (wasOpen) {
        safe(() -> listener.onDisconnected(this, "closed"));
      }
      return;
    }
    switch (o.kind) {
      case MOVED:
        if (moveError != null) {
          Throwable e = new ProtocolException("bad moved location: " + o.location, moveError);
          safe(() -> listener.onError(this, e));
        } else {
          String where = o.location != null ? o.location : base.toString();
          safe(() -> listener.onMoved(this, where));
        }
        break;
      case REPLACED:
        safe(() -> listener.onReplaced(this));
        break;
      case ERROR:
      case UNAVAILABLE:
        if (o.error != null) {
          safe(() -> listener.onError(this, o.error));
        }
        break;
      default:
        break;
    }
    if (wasOpen) {
      safe(() -> listener.onDisconnected(this, o.reason));
    }
    if (delay >= 0) {
      schedule(delay);
    }
  }

  /** The backoff jitter source; tests in this package pin it to make delays predictable. */
  private volatile Random jitter;

  private Random rnd() {
    Random r = jitter;
    return r != null ? r : ThreadLocalRandom.current();
  }

  /** For tests: draw backoff jitter from {@code r} instead of a fresh thread-local source. */
  void jitterFrom(Random r) {
    jitter = r;
  }

  private void safe(Runnable r) {
    try {
      r.run();
    } catch (RuntimeException e) {
      // A listener's exception must not kill the client's threads.
      Thread t = Thread.currentThread();
      t.getUncaughtExceptionHandler().uncaughtException(t, e);
    }
  }

  /** Resolves a Location against the URI it came from; only http(s) targets are accepted. */
  static URI resolve(URI from, String location) {
    if (location == null || location.isEmpty()) {
      throw new IllegalArgumentException("empty location");
    }
    try {
      URI u = from.resolve(new URI(location));
      String s = u.getScheme() == null ? "" : u.getScheme().toLowerCase(Locale.ROOT);
      if (!(s.equals("http") || s.equals("https") || s.equals("ws") || s.equals("wss"))
          || u.getHost() == null) {
        throw new IllegalArgumentException("not an http(s) URL: " + location);
      }
      return u;
    } catch (URISyntaxException e) {
      throw new IllegalArgumentException("bad URL: " + location, e);
    }
  }

  private static boolean tls(URI u) {
    String s = u.getScheme().toLowerCase(Locale.ROOT);
    return s.equals("https") || s.equals("wss");
  }

  private static int port(URI u) {
    return u.getPort() > 0 ? u.getPort() : tls(u) ? 443 : 80;
  }

  /** {@code http://host:port} (or https) of a URI. */
  static String nodeUrl(URI u) {
    String host = u.getHost();
    if (host.indexOf(':') >= 0 && !host.startsWith("[")) {
      host = "[" + host + "]";
    }
    return (tls(u) ? "https" : "http") + "://" + host + ":" + port(u);
  }

  /** The path of {@code /connect} under a URI's path (a base may sit under a proxy prefix). */
  private static String connectPath(URI u) {
    String p = u.getRawPath();
    if (p == null || p.isEmpty() || p.equals("/")) {
      return "/connect";
    }
    if (p.endsWith("/connect")) {
      return p;
    }
    return (p.endsWith("/") ? p.substring(0, p.length() - 1) : p) + "/connect";
  }

  private String query(String password, boolean forSend) {
    Map<String, String> q = new LinkedHashMap<>();
    q.put("uid", uid);
    q.put("password", password);
    q.put("codec", forSend ? null : opt.codec.queryValue());
    return SimpleHttp.query(q);
  }

  private void postSend(Connection c, Message m) throws IOException {
    String password;
    try {
      password = tokens.token();
    } catch (Exception e) {
      throw new IOException("token provider failed: " + e.getMessage(), e);
    }
    String path = connectPath(c.node);
    path = path.substring(0, path.length() - "/connect".length()) + "/send";
    String url = nodeUrl(c.node) + path + "?" + query(password, true);
    SimpleHttp.Response r =
        SimpleHttp.request(
            "POST",
            url,
            Codec.JSON.encode(m),
            "application/json",
            opt.sslSocketFactory,
            opt.connectTimeoutMs);
    if (r.status != 200) {
      throw new IOException("POST /send: HTTP " + r.status + ": " + SimpleHttp.errorReason(r));
    }
  }

  private void delivered(Message m) {
    if (m.type() != Message.USER_MESSAGE && m.type() != Message.CHANNEL_MESSAGE) {
      return; // heartbeats and anything else are not for the application
    }
    boolean ackNow = false;
    synchronized (lock) {
      if (closed) {
        return;
      }
      moves = 0;
      Long s = m.seq();
      if (s != null) {
        if (Long.compareUnsigned(s, lastSeq) <= 0) {
          return; // a duplicate from a replay
        }
        lastSeq = s;
        if (opt.autoAck) {
          unacked++;
          if (unacked >= opt.ackBatch) {
            ackNow = true;
          } else if (ackTimer == null) {
            ackTimer = scheduler.schedule(this::flushAck, opt.ackDelayMs, TimeUnit.MILLISECONDS);
          }
        }
      }
    }
    safe(() -> listener.onMessage(this, m));
    if (ackNow) {
      scheduler.execute(this::flushAck);
    }
  }

  private void flushAck() {
    long seq;
    synchronized (lock) {
      if (ackTimer != null) {
        ackTimer.cancel(false);
        ackTimer = null;
      }
      seq = lastSeq;
      if (closed || Long.compareUnsigned(seq, ackedSeq) <= 0) {
        return;
      }
    }
    try {
      ack(seq);
    } catch (IOException e) {
      // Not connected now: the server replays what was not acked, and duplicates are dropped.
    }
  }

  /**
   * After a (re)connect: ack what was delivered (the server keeps the max, so a repeat is free).
   */
  private void ackPendingSoon() {
    synchronized (lock) {
      if (opt.autoAck && Long.compareUnsigned(lastSeq, ackedSeq) > 0 && ackTimer == null) {
        ackTimer = scheduler.schedule(this::flushAck, opt.ackDelayMs, TimeUnit.MILLISECONDS);
      }
    }
  }

  /** One stream attempt: connect, handshake, read until it ends. Owns its reader thread. */
  private final class Connection implements Runnable {
    final URI target;
    final Transport transport;
    final Codec codec;
    final Thread thread;
    final ReentrantLock writeLock = new ReentrantLock();
    volatile Socket socket;
    volatile boolean open;
    volatile boolean shut;
    volatile String abortReason;
    volatile long lastRead;
    volatile long lastWrite;
    URI node;
    OutputStream out;
    ScheduledFuture<?> heartbeat;

    Connection(URI target, Transport transport, Codec codec) {
      this.target = target;
      this.transport = transport;
      this.codec = codec;
      this.node = target;
      this.thread = new Thread(this, "ipush-reader-" + uid);
      this.thread.setDaemon(true);
    }

    @Override
    public void run() {
      Outcome o;
      try {
        o = establishAndRead();
      } catch (Throwable t) {
        o = Outcome.error(t);
      }
      if (abortReason != null && (o.kind == Kind.ERROR || o.kind == Kind.END)) {
        o = new Outcome(Kind.ERROR, abortReason, new IOException(abortReason), null);
      }
      if (shut) {
        o = new Outcome(Kind.CLOSED, "closed", null, null);
      }
      if (heartbeat != null) {
        heartbeat.cancel(false);
      }
      closeSocket();
      ended(this, o);
    }

    /** Closes the socket from another thread (the reader then ends). */
    void abort(String reason) {
      abortReason = reason;
      closeSocket();
    }

    /** The user's close: a polite close frame on WebSocket, then the socket. */
    void shutdown() {
      shut = true;
      if (open && transport == Transport.WEBSOCKET) {
        try {
          writeFrame(
              WebSocketCodec.OP_CLOSE,
              WebSocketCodec.closePayload(WebSocketCodec.CLOSE_NORMAL, "closed"));
        } catch (IOException ignored) {
          // closing anyway
        }
      }
      closeSocket();
    }

    void closeSocket() {
      Socket s = socket;
      if (s != null) {
        try {
          s.close();
        } catch (IOException ignored) {
          // nothing more to do
        }
      }
    }

    private Socket openSocket(URI u) throws IOException {
      String host = u.getHost();
      if (host.startsWith("[") && host.endsWith("]")) {
        host = host.substring(1, host.length() - 1);
      }
      int port = port(u);
      Socket raw = new Socket();
      socket = raw;
      if (shut) {
        raw.close();
        throw new IOException("closed");
      }
      raw.connect(new InetSocketAddress(host, port), opt.connectTimeoutMs);
      raw.setTcpNoDelay(true);
      raw.setKeepAlive(true);
      raw.setSoTimeout(opt.connectTimeoutMs);
      if (!tls(u)) {
        return raw;
      }
      SSLSocketFactory f =
          opt.sslSocketFactory != null
              ? opt.sslSocketFactory
              : (SSLSocketFactory) SSLSocketFactory.getDefault();
      SSLSocket s = (SSLSocket) f.createSocket(raw, host, port, true);
      socket = s;
      SSLParameters p = s.getSSLParameters();
      p.setEndpointIdentificationAlgorithm("HTTPS");
      s.setSSLParameters(p);
      s.startHandshake();
      return s;
    }

    private Outcome establishAndRead() throws Exception {
      String password;
      try {
        password = tokens.token();
      } catch (Exception e) {
        return Outcome.error(new IOException("token provider failed: " + e.getMessage(), e));
      }
      if (password == null || password.isEmpty()) {
        return Outcome.error(new IOException("token provider gave an empty password"));
      }
      URI u = target;
      String wsKey = null;
      InputStream in;
      HttpHead head;
      for (int redirects = 0; ; redirects++) {
        Socket s;
        try {
          s = openSocket(u);
        } catch (IOException e) {
          return Outcome.error(
              new IOException("connect to " + nodeUrl(u) + " failed: " + e.getMessage(), e));
        }
        in = new BufferedInputStream(s.getInputStream(), 16 * 1024);
        out = new BufferedOutputStream(s.getOutputStream(), 8 * 1024);
        StringBuilder req = new StringBuilder(256);
        req.append("GET ")
            .append(connectPath(u))
            .append('?')
            .append(query(password, false))
            .append(" HTTP/1.1\r\nHost: ")
            .append(u.getHost())
            .append(':')
            .append(port(u))
            .append("\r\nUser-Agent: ")
            .append(USER_AGENT)
            .append("\r\n");
        switch (transport) {
          case WEBSOCKET:
            wsKey = WebSocketCodec.newKey(secure);
            req.append("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ")
                .append(wsKey)
                .append("\r\nSec-WebSocket-Version: 13\r\n");
            break;
          case SSE:
            req.append("Accept: text/event-stream\r\nCache-Control: no-cache\r\n");
            long have = lastSeq();
            if (have != 0) {
              req.append("Last-Event-ID: ").append(Long.toUnsignedString(have)).append("\r\n");
            }
            break;
          default:
            req.append("Accept: */*\r\n");
        }
        req.append("\r\n");
        try {
          out.write(req.toString().getBytes(StandardCharsets.UTF_8));
          out.flush();
          head = HttpHead.read(in);
        } catch (IOException e) {
          return Outcome.error(
              new IOException("connect to " + nodeUrl(u) + " failed: " + e.getMessage(), e));
        }
        int st = head.status;
        if (st == 301 || st == 302 || st == 303 || st == 307 || st == 308) {
          String loc = head.header("location");
          closeSocket();
          if (redirects >= opt.maxRedirects) {
            return Outcome.error(new ServerErrorException(st, "too many redirects"));
          }
          try {
            u = resolve(u, loc);
          } catch (IllegalArgumentException e) {
            return Outcome.error(new ProtocolException("bad redirect location: " + loc, e));
          }
          continue;
        }
        break;
      }
      node = u;
      Outcome refused = checkHead(head, in, wsKey);
      if (refused != null) {
        return refused;
      }
      socket.setSoTimeout(0);
      long now = System.nanoTime();
      lastRead = now;
      lastWrite = now;
      synchronized (lock) {
        if (closed) {
          return new Outcome(Kind.CLOSED, "closed", null, null);
        }
        attempt = 0;
        // An ack written just before the last connection died may never have been read: the
        // server's last_ack is unknown here, so (with auto-ack) the highest seq is acked again.
        ackedSeq = 0;
      }
      open = true;
      long period = Math.max(5, opt.heartbeatIntervalMs / 4);
      heartbeat = scheduler.scheduleAtFixedRate(this::tick, period, period, TimeUnit.MILLISECONDS);
      safe(() -> listener.onConnected(Client.this, transport, nodeUrl(node)));
      ackPendingSoon();
      switch (transport) {
        case WEBSOCKET:
          return readWebSocket(in);
        case SSE:
          return readSse(in, "chunked".equalsIgnoreCase(head.header("transfer-encoding")));
        default:
          return readChunked(in);
      }
    }

    /** Null when the head opens the stream; else what to do about it. */
    private Outcome checkHead(HttpHead h, InputStream in, String wsKey) throws IOException {
      int st = h.status;
      if (st >= 400) {
        String reason = SimpleHttp.errorReason(new SimpleHttp.Response(st, h.readBody(in)));
        ServerErrorException e = new ServerErrorException(st, reason);
        boolean fatal = st == 400 || st == 401 || st == 403 || st == 429 || st == 503;
        if (!fatal && transport != Transport.CHUNKED) {
          return new Outcome(Kind.UNAVAILABLE, "unavailable", e, null);
        }
        return new Outcome(Kind.ERROR, e.getMessage(), e, null);
      }
      switch (transport) {
        case WEBSOCKET:
          {
            String accept = h.header("sec-websocket-accept");
            if (st != 101
                || !"websocket".equalsIgnoreCase(h.header("upgrade"))
                || accept == null
                || !accept.equals(WebSocketCodec.acceptFor(wsKey))) {
              return new Outcome(
                  Kind.UNAVAILABLE,
                  "unavailable",
                  new ProtocolException("WebSocket upgrade refused (HTTP " + st + ")"),
                  null);
            }
            return null;
          }
        case SSE:
          {
            String ct = h.header("content-type");
            if (st != 200
                || ct == null
                || !ct.toLowerCase(Locale.ROOT).startsWith("text/event-stream")) {
              return new Outcome(
                  Kind.UNAVAILABLE,
                  "unavailable",
                  new ProtocolException("no event stream (HTTP " + st + ", " + ct + ")"),
                  null);
            }
            return null;
          }
        default:
          if (st != 200 || !"chunked".equalsIgnoreCase(h.header("transfer-encoding"))) {
            return Outcome.error(new ProtocolException("not a chunked stream (HTTP " + st + ")"));
          }
          return null;
      }
    }

    /** Heartbeat and watchdog, on the scheduler. */
    private void tick() {
      if (!open) {
        return;
      }
      long now = System.nanoTime();
      long hb = TimeUnit.MILLISECONDS.toNanos(opt.heartbeatIntervalMs);
      if (now - lastRead > 3 * hb) {
        abort("no data from the server for 3x the heartbeat interval");
        return;
      }
      // A writer blocked on a full socket holds the lock: skip this beat rather than block the
      // scheduler (the watchdog above still runs on the next tick).
      if (transport != Transport.SSE && now - lastWrite >= hb && writeLock.tryLock()) {
        try {
          writeMessage(Message.heartbeat());
        } catch (IOException e) {
          abort("heartbeat write failed: " + e.getMessage());
        } finally {
          writeLock.unlock();
        }
      }
    }

    void writeMessage(Message m) throws IOException {
      byte[] payload = codec.encode(m);
      if (transport == Transport.WEBSOCKET) {
        writeFrame(
            codec == Codec.MSGPACK ? WebSocketCodec.OP_BINARY : WebSocketCodec.OP_TEXT, payload);
      } else {
        byte[] hex =
            (Integer.toHexString(payload.length) + "\r\n").getBytes(StandardCharsets.US_ASCII);
        writeLock.lock();
        try {
          out.write(hex);
          out.write(payload);
          out.write('\r');
          out.write('\n');
          out.flush();
          lastWrite = System.nanoTime();
        } catch (IOException e) {
          abort("write failed: " + e.getMessage());
          throw e;
        } finally {
          writeLock.unlock();
        }
      }
    }

    void writeFrame(int opcode, byte[] payload) throws IOException {
      byte[] mask = new byte[4];
      secure.nextBytes(mask);
      byte[] frame = WebSocketCodec.encodeFrame(opcode, true, payload, mask);
      writeLock.lock();
      try {
        out.write(frame);
        out.flush();
        lastWrite = System.nanoTime();
      } catch (IOException e) {
        abort("write failed: " + e.getMessage());
        throw e;
      } finally {
        writeLock.unlock();
      }
    }

    /** A decoded payload: a message, or a stream-ending error. Null to keep reading. */
    private Outcome payload(Map<String, Object> m) throws ProtocolException {
      if (m.containsKey("error")) {
        Object r = m.get("error");
        String reason = r instanceof String ? (String) r : String.valueOf(r);
        if (reason.equals("replaced")) {
          return new Outcome(Kind.REPLACED, "replaced", null, null);
        }
        if (reason.equals("moved")) {
          Object loc = m.get("location");
          if (!(loc instanceof String)) {
            throw new ProtocolException("moved without a location");
          }
          return new Outcome(Kind.MOVED, "moved", null, (String) loc);
        }
        ServerErrorException e = new ServerErrorException(0, reason);
        return new Outcome(Kind.ERROR, reason, e, null);
      }
      delivered(Message.fromMap(m));
      return null;
    }

    private Outcome readChunked(InputStream in) throws IOException {
      ChunkDecoder dec = new ChunkDecoder();
      byte[] rb = new byte[16 * 1024];
      try {
        while (true) {
          int n = in.read(rb);
          if (n < 0) {
            dec.finish();
            return new Outcome(Kind.END, "connection closed by the server", null, null);
          }
          lastRead = System.nanoTime();
          dec.feed(rb, 0, n);
          byte[] p;
          while ((p = dec.next()) != null) {
            if (p.length > opt.maxMessageBytes) {
              throw new ProtocolException("message over " + opt.maxMessageBytes + " bytes");
            }
            Outcome o = payload(codec.decodeMap(p));
            if (o != null) {
              return o;
            }
          }
          if (dec.ended()) {
            return new Outcome(Kind.END, "stream ended by the server", null, null);
          }
        }
      } catch (ProtocolException e) {
        return Outcome.error(e);
      }
    }

    private Outcome readWebSocket(InputStream in) throws IOException {
      WebSocketCodec.Reader r = new WebSocketCodec.Reader(opt.maxMessageBytes);
      byte[] rb = new byte[16 * 1024];
      try {
        while (true) {
          int n = in.read(rb);
          if (n < 0) {
            return new Outcome(Kind.END, "connection closed by the server", null, null);
          }
          lastRead = System.nanoTime();
          r.feed(rb, 0, n);
          WebSocketCodec.Event e;
          while ((e = r.next()) != null) {
            switch (e.opcode) {
              case WebSocketCodec.OP_TEXT:
              case WebSocketCodec.OP_BINARY:
                {
                  Outcome o = payload(codec.decodeMap(e.payload));
                  if (o != null) {
                    politeClose(WebSocketCodec.CLOSE_NORMAL);
                    return o;
                  }
                  break;
                }
              case WebSocketCodec.OP_PING:
                writeFrame(WebSocketCodec.OP_PONG, e.payload);
                break;
              case WebSocketCodec.OP_PONG:
                break;
              default:
                return closeFrame(e);
            }
          }
        }
      } catch (WebSocketProtocolException e) {
        politeClose(e.closeCode());
        return Outcome.error(e);
      } catch (ProtocolException e) {
        politeClose(WebSocketCodec.CLOSE_INVALID_DATA);
        return Outcome.error(e);
      }
    }

    private Outcome closeFrame(WebSocketCodec.Event e) throws ProtocolException {
      int code = e.closeCode;
      politeClose(code == WebSocketCodec.CLOSE_NO_STATUS ? WebSocketCodec.CLOSE_NORMAL : code);
      if (code == WebSocketCodec.CLOSE_SERVICE_RESTART) {
        Outcome o = null;
        try {
          o = payload(Json.parseObject(e.closeReason));
        } catch (ProtocolException notJson) {
          // A reason cut at 123 bytes is not JSON any more: the base URL redirects us instead.
        }
        if (o != null) {
          return o;
        }
        return new Outcome(Kind.MOVED, "moved", null, null);
      }
      String why =
          "closed by the server ("
              + code
              + (e.closeReason.isEmpty() ? "" : " " + e.closeReason)
              + ")";
      if (code == WebSocketCodec.CLOSE_NORMAL
          || code == WebSocketCodec.CLOSE_GOING_AWAY
          || code == WebSocketCodec.CLOSE_NO_STATUS
          || code == WebSocketCodec.CLOSE_SERVICE_RESTART) {
        return new Outcome(Kind.END, why, null, null);
      }
      return new Outcome(Kind.ERROR, why, new ServerErrorException(0, why), null);
    }

    private void politeClose(int code) {
      try {
        writeFrame(WebSocketCodec.OP_CLOSE, WebSocketCodec.closePayload(code, ""));
      } catch (IOException ignored) {
        // the socket is going anyway
      }
    }

    private Outcome readSse(InputStream in, boolean chunked) throws IOException {
      SseParser parser = new SseParser();
      ChunkDecoder dechunk = chunked ? new ChunkDecoder() : null;
      Outcome[] result = new Outcome[1];
      SseParser.Sink sink =
          ev -> {
            if (result[0] != null) {
              return;
            }
            if ("moved".equals(ev.event)) {
              Map<String, Object> m = Json.parseObject(ev.data);
              Object loc = m.get("location");
              if (!(loc instanceof String)) {
                throw new ProtocolException("moved event without a location");
              }
              result[0] = new Outcome(Kind.MOVED, "moved", null, (String) loc);
              return;
            }
            byte[] data = ev.data.getBytes(StandardCharsets.UTF_8);
            if (data.length > opt.maxMessageBytes) {
              throw new ProtocolException("message over " + opt.maxMessageBytes + " bytes");
            }
            result[0] = payload(Codec.JSON.decodeMap(data));
          };
      byte[] rb = new byte[16 * 1024];
      try {
        while (true) {
          int n = in.read(rb);
          if (n < 0) {
            return new Outcome(Kind.END, "connection closed by the server", null, null);
          }
          lastRead = System.nanoTime();
          if (dechunk == null) {
            parser.feed(rb, 0, n, sink);
          } else {
            dechunk.feed(rb, 0, n);
            byte[] p;
            while (result[0] == null && (p = dechunk.next()) != null) {
              parser.feed(p, 0, p.length, sink);
            }
            if (result[0] == null && dechunk.ended()) {
              return new Outcome(Kind.END, "stream ended by the server", null, null);
            }
          }
          if (result[0] != null) {
            return result[0];
          }
        }
      } catch (ProtocolException e) {
        return Outcome.error(e);
      }
    }
  }
}
