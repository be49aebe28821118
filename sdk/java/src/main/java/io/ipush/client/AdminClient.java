package io.ipush.client;

import java.io.IOException;
import java.net.URI;
import java.net.URISyntaxException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import javax.net.ssl.SSLSocketFactory;

/**
 * The admin API client ({@code http://host:admin_port}). Every call is synchronous and thread-safe;
 * a 4xx/5xx answer raises {@link AdminException} with the status and the server's {@code error}
 * reason.
 */
public final class AdminClient {
  /** The server's default {@code --max_batch_lines}. */
  public static final int DEFAULT_MAX_BATCH_LINES = 10_000;

  /** The server's default {@code --max_batch_bytes}. */
  public static final int DEFAULT_MAX_BATCH_BYTES = 16 << 20;

  private final String base;
  private final SSLSocketFactory ssl;
  private final int timeoutMs;
  private final int maxBatchLines;
  private final int maxBatchBytes;

  public AdminClient(String baseUrl) {
    this(baseUrl, null, 10_000);
  }

  /** {@code ssl}: the socket factory for an https admin URL (null: the JDK's). */
  public AdminClient(String baseUrl, SSLSocketFactory ssl, int timeoutMs) {
    this(baseUrl, ssl, timeoutMs, DEFAULT_MAX_BATCH_LINES, DEFAULT_MAX_BATCH_BYTES);
  }

  /**
   * {@code maxBatchLines}/{@code maxBatchBytes}: the most messages and body bytes of one {@code
   * POST /pub/batch} request of {@link #publishBatch} (the server's {@code --max_batch_lines} and
   * {@code --max_batch_bytes}, if it runs with lower ones than the defaults).
   */
  public AdminClient(
      String baseUrl, SSLSocketFactory ssl, int timeoutMs, int maxBatchLines, int maxBatchBytes) {
    try {
      URI u = new URI(baseUrl);
      if (u.getHost() == null
          || !("http".equalsIgnoreCase(u.getScheme()) || "https".equalsIgnoreCase(u.getScheme()))) {
        throw new IllegalArgumentException("admin URL must be http(s)://host:port: " + baseUrl);
      }
    } catch (URISyntaxException e) {
      throw new IllegalArgumentException("bad admin URL: " + baseUrl, e);
    }
    if (timeoutMs < 1) {
      throw new IllegalArgumentException("timeout must be >= 1 ms");
    }
    this.base = baseUrl.endsWith("/") ? baseUrl.substring(0, baseUrl.length() - 1) : baseUrl;
    this.ssl = ssl;
    this.timeoutMs = timeoutMs;
    if (maxBatchLines < 1 || maxBatchBytes < 1) {
      throw new IllegalArgumentException("batch limits must be >= 1");
    }
    this.maxBatchLines = maxBatchLines;
    this.maxBatchBytes = maxBatchBytes;
  }

  /**
   * {@code POST /pub?to=U&from=F[&ttl=S][&idempotency_key=K]}: a user message to {@code to}.
   *
   * @param ttl seconds to keep it (null: the server's default, 7 days; 0: no seq, not stored,
   *     delivered only if online)
   * @param idempotencyKey sent as {@code &idempotency_key=K}: a repeat within the server's window
   *     answers the first result and publishes nothing (another body: 422)
   */
  public void publish(String to, String from, String body, Long ttl, String idempotencyKey)
      throws IOException {
    Map<String, String> q = new LinkedHashMap<>();
    q.put("to", req(to, "to"));
    q.put("from", req(from, "from"));
    pub(q, body, ttl, idempotencyKey);
  }

  public void publish(String to, String from, String body) throws IOException {
    publish(to, from, body, null, null);
  }

  /** {@code POST /pub?channel=C&from=F[&ttl=S][&idempotency_key=K]}: to every member of C. */
  public void publishChannel(
      String channel, String from, String body, Long ttl, String idempotencyKey)
      throws IOException {
    Map<String, String> q = new LinkedHashMap<>();
    q.put("channel", req(channel, "channel"));
    q.put("from", req(from, "from"));
    pub(q, body, ttl, idempotencyKey);
  }

  public void publishChannel(String channel, String from, String body) throws IOException {
    publishChannel(channel, from, body, null, null);
  }

  private void pub(Map<String, String> q, String body, Long ttl, String key) throws IOException {
    checkPub(body, ttl);
    q.put("ttl", ttl == null ? null : Long.toString(ttl));
    q.put("idempotency_key", key);
    call("POST", "/pub", q, body.getBytes(StandardCharsets.UTF_8));
  }

  private static void checkPub(String body, Long ttl) {
    if (body == null) {
      throw new IllegalArgumentException("body must not be null");
    }
    if (ttl != null && ttl < 0) {
      throw new IllegalArgumentException("ttl must be >= 0");
    }
  }

  /**
   * {@code POST /pub/batch}: many messages, one {@link BatchResult} per item, in item order. Items
   * are checked as {@link #publish} checks its arguments ({@link IllegalArgumentException} before
   * anything is sent). A list over {@code maxBatchLines} items or {@code maxBatchBytes} bytes goes
   * as several requests, one after the other. A request that fails as a whole (I/O, timeout, a
   * 4xx/5xx) gives its exception to each of its items and to every later item, which is not sent
   * (so no later message overtakes a failed one).
   */
  public List<BatchResult> publishBatch(List<BatchItem> items) {
    List<byte[]> lines = new ArrayList<>(items.size());
    for (BatchItem item : items) {
      lines.add(batchLine(item));
    }
    List<BatchResult> out = new ArrayList<>(items.size());
    int at = 0;
    while (at < lines.size()) {
      int end = runEnd(lines, at);
      try {
        out.addAll(postBatch(lines.subList(at, end)));
      } catch (IOException e) {
        BatchResult failed = BatchResult.failed(e);
        while (out.size() < lines.size()) {
          out.add(failed);
        }
        break;
      }
      at = end;
    }
    return Collections.unmodifiableList(out);
  }

  /** The item's NDJSON line (with the newline), after {@link #publish}'s checks. */
  private static byte[] batchLine(BatchItem item) {
    Map<String, Object> line = new LinkedHashMap<>();
    if (item.to != null) {
      line.put("to", req(item.to, "to"));
    } else {
      line.put("channel", req(item.channel, "channel"));
    }
    line.put("from", req(item.from, "from"));
    checkPub(item.body, item.ttl);
    if (item.ttl != null) {
      line.put("ttl", item.ttl);
    }
    line.put("b", item.body);
    if (item.idempotencyKey != null) {
      line.put("idempotency_key", item.idempotencyKey);
    }
    return (Json.write(line) + "\n").getBytes(StandardCharsets.UTF_8);
  }

  /** The end of the run from {@code at}: at most maxBatchLines lines and maxBatchBytes bytes. */
  private int runEnd(List<byte[]> lines, int at) {
    int end = at;
    long size = 0;
    while (end < lines.size() && end - at < maxBatchLines) {
      int n = lines.get(end).length;
      if (end > at && size + n > maxBatchBytes) {
        break;
      }
      size += n;
      end++;
    }
    return end;
  }

  private List<BatchResult> postBatch(List<byte[]> lines) throws IOException {
    java.io.ByteArrayOutputStream body = new java.io.ByteArrayOutputStream();
    for (byte[] l : lines) {
      body.write(l);
    }
    SimpleHttp.Response r =
        SimpleHttp.request(
            "POST",
            base + "/pub/batch",
            body.toByteArray(),
            "application/x-ndjson",
            ssl,
            timeoutMs);
    if (r.status >= 300) {
      throw new AdminException(r.status, SimpleHttp.errorReason(r));
    }
    List<BatchResult> out = new ArrayList<>(lines.size());
    for (String a : r.text().split("\n")) {
      if (!a.isBlank()) {
        out.add(batchAnswer(a));
      }
    }
    if (out.size() != lines.size()) {
      throw new IOException("/pub/batch: " + out.size() + " answers to " + lines.size() + " lines");
    }
    return out;
  }

  /** {@code {"result":…,"status":200}} or {@code {"error":…,"status":N}}. */
  private static BatchResult batchAnswer(String line) {
    Map<String, Object> m;
    try {
      m = Json.parseObject(line);
    } catch (ProtocolException e) {
      return BatchResult.failed(new IOException("/pub/batch: answer is not JSON: " + line, e));
    }
    Object status = m.get("status");
    int code = status instanceof Number ? ((Number) status).intValue() : 200;
    if (m.containsKey("error")) {
      return BatchResult.failed(new AdminException(code, String.valueOf(m.get("error"))));
    }
    if (!m.containsKey("result")) {
      return BatchResult.failed(new IOException("/pub/batch: no result in " + line));
    }
    return BatchResult.stored();
  }

  /** {@code GET /sub?uid=U&cid=C}. */
  public void sub(String uid, String cid) throws IOException {
    call("GET", "/sub", pairs("uid", req(uid, "uid"), "cid", req(cid, "cid")), null);
  }

  /** {@code GET /unsub?uid=U&cid=C}. */
  public void unsub(String uid, String cid) throws IOException {
    call("GET", "/unsub", pairs("uid", req(uid, "uid"), "cid", req(cid, "cid")), null);
  }

  /** {@code GET /msg?uid=U}: U's offline messages (above its last ack), ascending seq. */
  public List<Message> msg(String uid) throws IOException {
    Object r = call("GET", "/msg", pairs("uid", req(uid, "uid")), null);
    if (!(r instanceof List)) {
      throw new IOException("/msg: result is not a list");
    }
    List<Message> out = new ArrayList<>();
    for (Object o : (List<?>) r) {
      if (!(o instanceof String)) {
        throw new IOException("/msg: an entry is not a string");
      }
      try {
        out.add(Message.fromMap(Json.parseObject(((String) o).trim())));
      } catch (ProtocolException e) {
        throw new IOException("/msg: " + e.getMessage(), e);
      }
    }
    return Collections.unmodifiableList(out);
  }

  /** {@code GET /shard?uid=U}: the client address ({@code HOST:PORT}) of U's node. */
  public String shard(String uid) throws IOException {
    Object r = call("GET", "/shard", pairs("uid", req(uid, "uid")), null);
    if (!(r instanceof String)) {
      throw new IOException("/shard: result is not a string");
    }
    return (String) r;
  }

  /** {@code GET /stats}: the node's counters, summed over its cores. */
  public Map<String, Object> stats() throws IOException {
    return object(call("GET", "/stats", Collections.emptyMap(), null), "/stats");
  }

  /** {@code GET /health}: status, cores, this node and its peers. */
  public Map<String, Object> health() throws IOException {
    return object(call("GET", "/health", Collections.emptyMap(), null), "/health");
  }

  /** {@code POST /disconnect?uid=U}: ends U's stream ({@code {"error":"disconnected"}}). */
  public void disconnect(String uid) throws IOException {
    call("POST", "/disconnect", pairs("uid", req(uid, "uid")), new byte[0]);
  }

  /**
   * {@code POST /disconnect?uid=U&location=ORIGIN}: ends U's stream with the move signal; its
   * client reconnects at once to {@code location}, another node's origin ({@code
   * http://HOST:PORT}), with its own credentials.
   */
  public void move(String uid, String location) throws IOException {
    call(
        "POST",
        "/disconnect",
        pairs("uid", req(uid, "uid"), "location", req(location, "location")),
        new byte[0]);
  }

  @SuppressWarnings("unchecked")
  private static Map<String, Object> object(Object r, String what) throws IOException {
    if (!(r instanceof Map)) {
      throw new IOException(what + ": result is not an object");
    }
    return (Map<String, Object>) r;
  }

  private static Map<String, String> pairs(String... kv) {
    Map<String, String> m = new LinkedHashMap<>();
    for (int i = 0; i < kv.length; i += 2) {
      m.put(kv[i], kv[i + 1]);
    }
    return m;
  }

  private static String req(String v, String name) {
    if (v == null || v.isEmpty()) {
      throw new IllegalArgumentException(name + " must not be empty");
    }
    return v;
  }

  /** One request; returns the {@code result} of a 2xx answer. */
  private Object call(String method, String path, Map<String, String> q, byte[] body)
      throws IOException {
    String qs = SimpleHttp.query(q);
    String url = base + path + (qs.isEmpty() ? "" : "?" + qs);
    SimpleHttp.Response r =
        SimpleHttp.request(method, url, body, "text/plain; charset=utf-8", ssl, timeoutMs);
    if (r.status >= 300) {
      throw new AdminException(r.status, SimpleHttp.errorReason(r));
    }
    Map<String, Object> m;
    try {
      m = Json.parseObject(r.text());
    } catch (ProtocolException e) {
      throw new IOException(path + ": answer is not JSON: " + e.getMessage(), e);
    }
    if (m.containsKey("error")) {
      throw new AdminException(r.status, String.valueOf(m.get("error")));
    }
    return m.get("result");
  }
}
