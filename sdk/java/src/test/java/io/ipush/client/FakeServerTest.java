package io.ipush.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * Scripted servers: bad bytes from the server are an error event and a reconnect (never a crash or
 * a hang); the move signal on each transport sends the client, at once, to the real server it
 * names; a silent stream is found dead; a refused WebSocket upgrade falls back to SSE.
 */
class FakeServerTest {
  static TestServer real;

  @BeforeAll
  static void start() throws Exception {
    real = TestServer.start();
  }

  @AfterAll
  static void stop() {
    if (real != null) {
      real.close();
    }
  }

  static ClientOptions.Builder fast(Transport t) {
    return ClientOptions.builder().transport(t).backoff(20, 200).autoAck(50, 10);
  }

  /** Two connections and a ProtocolException: the client reported the bad bytes and came back. */
  private static void expectErrorAndReconnect(FakeServer fake, Recorder r, Client c) {
    c.connect();
    r.await(
        "a protocol error",
        10_000,
        () -> r.errors.stream().anyMatch(e -> e instanceof ProtocolException));
    long deadline = System.currentTimeMillis() + 10_000;
    while (fake.connections() < 2 && System.currentTimeMillis() < deadline) {
      Thread.onSpinWait();
      try {
        Thread.sleep(10);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
    }
    assertTrue(fake.connections() >= 2, "reconnected after the bad bytes: " + r.events);
    assertEquals(0, r.messages().size());
  }

  @Test
  void malformedChunkSize() throws Exception {
    try (FakeServer fake =
        new FakeServer(
            (i, head, s) -> FakeServer.write(s, FakeServer.CHUNKED_HEAD + "zz\r\n{}\r\n"))) {
      Recorder r = new Recorder();
      try (Client c = new Client(fake.url(), "u1", "pw", fast(Transport.CHUNKED).build(), r)) {
        expectErrorAndReconnect(fake, r, c);
      }
    }
  }

  @Test
  void malformedChunkPayload() throws Exception {
    try (FakeServer fake =
        new FakeServer(
            (i, head, s) ->
                FakeServer.write(
                    s, FakeServer.CHUNKED_HEAD + FakeServer.chunk("{\"y\":3,\"s\":")))) {
      Recorder r = new Recorder();
      try (Client c = new Client(fake.url(), "u1", "pw", fast(Transport.CHUNKED).build(), r)) {
        expectErrorAndReconnect(fake, r, c);
      }
    }
  }

  @Test
  void malformedWebSocketFrameIsClosedWith1002() throws Exception {
    int[] closeCode = {-1};
    try (FakeServer fake =
        new FakeServer(
            (i, head, s) -> {
              FakeServer.write(s, FakeServer.wsHead(head));
              // RSV1 set: no extension was negotiated.
              FakeServer.write(s, new byte[] {(byte) 0xC1, 0x02, '{', '}'});
              // The client answers with a masked close frame carrying 1002.
              InputStream in = s.getInputStream();
              int b0 = in.read();
              int b1 = in.read();
              if (b0 == 0x88 && (b1 & 0x80) != 0) {
                byte[] mask = in.readNBytes(4);
                byte[] p = in.readNBytes(b1 & 0x7f);
                for (int k = 0; k < p.length; k++) {
                  p[k] ^= mask[k & 3];
                }
                synchronized (closeCode) {
                  closeCode[0] = ((p[0] & 0xff) << 8) | (p[1] & 0xff);
                }
              }
            })) {
      Recorder r = new Recorder();
      try (Client c = new Client(fake.url(), "u1", "pw", fast(Transport.WEBSOCKET).build(), r)) {
        expectErrorAndReconnect(fake, r, c);
      }
      synchronized (closeCode) {
        assertEquals(1002, closeCode[0]);
      }
    }
  }

  @Test
  void malformedSseData() throws Exception {
    try (FakeServer fake =
        new FakeServer(
            (i, head, s) -> FakeServer.write(s, FakeServer.SSE_HEAD + "id: 1\ndata: {nope\n\n"))) {
      Recorder r = new Recorder();
      try (Client c = new Client(fake.url(), "u1", "pw", fast(Transport.SSE).build(), r)) {
        expectErrorAndReconnect(fake, r, c);
      }
    }
  }

  @Test
  void badBytesInsteadOfAResponseHead() throws Exception {
    try (FakeServer fake =
        new FakeServer((i, head, s) -> FakeServer.write(s, "\u0000\u0001garbage\r\n\r\n"))) {
      Recorder r = new Recorder();
      try (Client c = new Client(fake.url(), "u1", "pw", fast(Transport.CHUNKED).build(), r)) {
        expectErrorAndReconnect(fake, r, c);
      }
    }
  }

  private static String movedJson(String uid) {
    return "{\"error\":\"moved\",\"location\":\""
        + real.clientUrl()
        + "/connect?uid="
        + uid
        + "&password=pw\"}";
  }

  /** The fake sends the move signal; the client must land on the real server for the same uid. */
  private static void expectMoved(Transport t, FakeServer.Handler h, String uid) throws Exception {
    try (FakeServer fake = new FakeServer(h)) {
      Recorder r = new Recorder();
      try (Client c = new Client(fake.url(), uid, "pw", fast(t).build(), r)) {
        c.connect();
        r.await("moved", 10_000, () -> r.moves.size() == 1);
        r.await("a connect to the real server", 10_000, () -> r.nodes.contains(real.clientUrl()));
        real.admin().publish(uid, "op", "after the move");
        r.awaitMessages(1, 10_000);
        assertEquals("after the move", r.messages().get(0).body());
        assertEquals(uid, r.messages().get(0).to());
        assertEquals(1, fake.connections(), "no retry against the old node");
        assertTrue(r.moves.get(0).startsWith(real.clientUrl()), r.moves.toString());
        assertTrue(fake.heads().get(0).contains("uid=" + uid + "&password=pw"));
      }
    }
  }

  @Test
  void movedOnChunked() throws Exception {
    String uid = "moved-chunked";
    expectMoved(
        Transport.CHUNKED,
        (i, head, s) -> {
          FakeServer.write(
              s, FakeServer.CHUNKED_HEAD + FakeServer.chunk(movedJson(uid)) + "0\r\n\r\n");
          s.close();
        },
        uid);
  }

  @Test
  void movedOnWebSocket() throws Exception {
    String uid = "moved-ws";
    expectMoved(
        Transport.WEBSOCKET,
        (i, head, s) -> {
          FakeServer.write(s, FakeServer.wsHead(head));
          byte[] reason = WebSocketCodec.closePayload(1012, movedJson(uid));
          FakeServer.write(
              s, WebSocketCodec.encodeFrame(WebSocketCodec.OP_CLOSE, true, reason, null));
          s.getInputStream().read(new byte[64]);
          s.close();
        },
        uid);
  }

  @Test
  void movedOnSse() throws Exception {
    String uid = "moved-sse";
    expectMoved(
        Transport.SSE,
        (i, head, s) -> {
          FakeServer.write(
              s, FakeServer.SSE_HEAD + "event: moved\ndata: " + movedJson(uid) + "\n\n");
          s.close();
        },
        uid);
  }

  @Test
  void aNodeThatKeepsMovingUsGetsBackoff() throws Exception {
    String[] self = new String[1];
    try (FakeServer fake =
        new FakeServer(
            (i, head, s) -> {
              String moved =
                  "{\"error\":\"moved\",\"location\":\"" + self[0] + "/connect?uid=u1\"}";
              FakeServer.write(s, FakeServer.CHUNKED_HEAD + FakeServer.chunk(moved) + "0\r\n\r\n");
              s.close();
            })) {
      self[0] = fake.url();
      Recorder r = new Recorder();
      ClientOptions o =
          ClientOptions.builder().transport(Transport.CHUNKED).backoff(400, 400).build();
      try (Client c = new Client(fake.url(), "u1", "pw", o, r)) {
        // Jitter pinned near its top: every backoff delay is ~400 ms, never ~0.
        c.jitterFrom(
            new Random() {
              @Override
              public double nextDouble() {
                return 0.999;
              }
            });
        c.connect();
        r.await("9 moves", 20_000, () -> r.moves.size() >= 9);
        List<Long> t = fake.headTimes();
        // The first 6 connections follow moves at once (not checked: load may slow them); from
        // the 7th on, each waits its backoff, and load can only make that gap longer.
        for (int i = 6; i < 9; i++) {
          long gapMs = (t.get(i) - t.get(i - 1)) / 1_000_000;
          assertTrue(gapMs >= 350, "connection " + (i + 1) + " came " + gapMs + " ms after");
        }
      }
    }
  }

  @Test
  void silentStreamIsDeadAfterThreeHeartbeats() throws Exception {
    // Head then silence; the fake never answers the client's heartbeats.
    try (FakeServer fake =
        new FakeServer((i, head, s) -> FakeServer.write(s, FakeServer.CHUNKED_HEAD))) {
      Recorder r = new Recorder();
      ClientOptions o = fast(Transport.CHUNKED).heartbeatIntervalMs(100).build();
      try (Client c = new Client(fake.url(), "u1", "pw", o, r)) {
        long t0 = System.nanoTime();
        c.connect();
        r.awaitConnects(2, 10_000);
        long ms = (System.nanoTime() - t0) / 1_000_000;
        assertTrue(ms >= 300, "dead only after ~3x the interval, took " + ms + " ms");
        assertTrue(
            r.errors.stream().anyMatch(e -> String.valueOf(e.getMessage()).contains("heartbeat")),
            r.events.toString());
      }
    }
  }

  @Test
  void refusedUpgradeFallsBackToSse() throws Exception {
    try (FakeServer fake =
        new FakeServer(
            (i, head, s) -> {
              if (head.toLowerCase().contains("upgrade: websocket")) {
                FakeServer.write(
                    s,
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 21\r\n\r\n{\"error\":\"not found\"}");
              } else if (head.contains("text/event-stream")) {
                FakeServer.write(
                    s,
                    FakeServer.SSE_HEAD
                        + "id: 1\ndata: {\"y\":3,\"f\":\"a\",\"t\":\"u1\",\"b\":\"x\",\"s\":1}\n\n");
                s.getInputStream().read();
              }
            })) {
      Recorder r = new Recorder();
      ClientOptions o = ClientOptions.builder().backoff(20, 200).build();
      try (Client c = new Client(fake.url(), "u1", "pw", o, r)) {
        c.connect();
        r.awaitMessages(1, 10_000);
        assertEquals(Transport.SSE, r.transports.get(0));
        assertEquals(2, fake.connections());
        assertTrue(r.errors.get(0) instanceof ServerErrorException, r.events.toString());
      }
    }
  }

  @Test
  void clientSendsMaskedFramesAndAnswersPings() throws Exception {
    byte[][] got = new byte[1][];
    try (FakeServer fake =
        new FakeServer(
            (i, head, s) -> {
              FakeServer.write(s, FakeServer.wsHead(head));
              FakeServer.write(
                  s,
                  WebSocketCodec.encodeFrame(
                      WebSocketCodec.OP_PING, true, "hb".getBytes(StandardCharsets.UTF_8), null));
              WebSocketCodec.Reader rd = new WebSocketCodec.Reader(1 << 20, true);
              byte[] buf = new byte[256];
              InputStream in = s.getInputStream();
              while (true) {
                int n = in.read(buf);
                if (n < 0) {
                  return;
                }
                rd.feed(buf, 0, n);
                WebSocketCodec.Event e = rd.next();
                if (e != null) {
                  synchronized (got) {
                    got[0] = new byte[e.payload.length + 1];
                    got[0][0] = (byte) e.opcode;
                    System.arraycopy(e.payload, 0, got[0], 1, e.payload.length);
                    got.notifyAll();
                  }
                  return;
                }
              }
            })) {
      Recorder r = new Recorder();
      try (Client c = new Client(fake.url(), "u1", "pw", fast(Transport.WEBSOCKET).build(), r)) {
        c.connect();
        synchronized (got) {
          long deadline = System.currentTimeMillis() + 10_000;
          while (got[0] == null && System.currentTimeMillis() < deadline) {
            got.wait(100);
          }
        }
        assertEquals(WebSocketCodec.OP_PONG, got[0][0], "a masked pong came back");
        assertEquals("hb", new String(got[0], 1, got[0].length - 1, StandardCharsets.UTF_8));
      }
    }
  }
}
