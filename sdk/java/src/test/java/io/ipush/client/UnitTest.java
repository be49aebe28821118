package io.ipush.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;

/** Pure parts: backoff, JSON, chunk decoder edge cases, SSE details, URL handling, options. */
class UnitTest {
  @Test
  void backoffIsFullJitterUnderTheCap() {
    Random r = new Random(42);
    for (int attempt = 0; attempt < 50; attempt++) {
      long ceiling = Math.min(30_000, 500L << Math.min(attempt, 20));
      long max = 0;
      long min = Long.MAX_VALUE;
      for (int i = 0; i < 2000; i++) {
        long d = Client.backoffDelay(500, 30_000, attempt, r);
        assertTrue(d >= 0 && d < ceiling, "attempt " + attempt + ": " + d);
        max = Math.max(max, d);
        min = Math.min(min, d);
      }
      // Full jitter: spread over the whole range, not around a centre.
      assertTrue(max > ceiling * 0.9, "attempt " + attempt + " max " + max);
      assertTrue(min < ceiling * 0.1, "attempt " + attempt + " min " + min);
    }
  }

  @Test
  void jsonRoundTripsAndRejects() throws Exception {
    Map<String, Object> m =
        Json.parseObject(
            " {\"a\" : [1, -2, 3.5, true, false, null], \"b\":\"\\u00e9\\ud83d\\ude00\\n\"} ");
    assertEquals(Arrays.asList(1L, -2L, 3.5, true, false, null), m.get("a"));
    assertEquals("é😀\n", m.get("b"));
    assertEquals("{\"a\":[1,-2,3.5,true,false,null],\"b\":\"é😀\\u000a\"}", Json.write(m));
    for (String bad :
        new String[] {
          "",
          "{",
          "{\"a\":}",
          "{\"a\":1,}",
          "[1,]",
          "{\"a\":1} x",
          "{'a':1}",
          "01",
          "{\"a\":\"\u0001\"}",
          "{\"a\":1,\"a\":2}",
          "nul"
        }) {
      assertThrows(ProtocolException.class, () -> Json.parse(bad), bad);
    }
    StringBuilder deep = new StringBuilder();
    for (int i = 0; i < 1000; i++) {
      deep.append('[');
    }
    assertThrows(ProtocolException.class, () -> Json.parse(deep.toString()));
  }

  @Test
  void messageModel() throws Exception {
    assertThrows(ProtocolException.class, () -> Message.fromMap(Json.parseObject("{\"b\":\"x\"}")));
    assertThrows(ProtocolException.class, () -> Message.fromMap(Json.parseObject("{\"y\":\"3\"}")));
    assertThrows(
        ProtocolException.class, () -> Message.fromMap(Json.parseObject("{\"y\":3,\"s\":-1}")));
    assertThrows(
        ProtocolException.class,
        () -> Message.fromMap(Json.parseObject("{\"y\":3,\"s\":18446744073709551616}")));
    Message max = Message.fromMap(Json.parseObject("{\"y\":3,\"s\":18446744073709551615}"));
    assertEquals("18446744073709551615", Long.toUnsignedString(max.seq()));
    assertEquals(
        "{\"y\":5,\"s\":3}", new String(Codec.JSON.encode(Message.ack(3)), StandardCharsets.UTF_8));
    assertEquals("{\"y\":1,\"c\":\"c1\"}", Message.subscribe("c1").toString());
    assertEquals("{\"y\":3,\"t\":\"u\",\"b\":\"x\"}", Message.toUser("u", "x").toString());
  }

  @Test
  void chunkDecoderEdges() throws Exception {
    ChunkDecoder d = new ChunkDecoder();
    byte[] in = "3;ext=1\r\nabc\r\n0\r\nTrailer: x\r\n\r\n".getBytes(StandardCharsets.US_ASCII);
    d.feed(in, 0, in.length);
    assertEquals("abc", new String(d.next(), StandardCharsets.US_ASCII));
    assertNull(d.next());
    assertTrue(d.ended());
    assertTrue(d.finish());
    // A connection that ends between chunks is not a clean end, but not broken framing either.
    ChunkDecoder between = new ChunkDecoder();
    byte[] one = "1\r\nx\r\n".getBytes(StandardCharsets.US_ASCII);
    between.feed(one, 0, one.length);
    between.next();
    assertTrue(!between.finish());
    // Oversized chunk refused from its size line alone.
    ChunkDecoder big = new ChunkDecoder();
    byte[] b = "ffffffff\r\n".getBytes(StandardCharsets.US_ASCII);
    big.feed(b, 0, b.length);
    assertThrows(ProtocolException.class, big::next);
    // Many chunks fed one byte at a time (the buffer compacts rather than grows).
    ChunkDecoder slow = new ChunkDecoder();
    byte[] c = "7\r\n{\"y\":0}\r\n".getBytes(StandardCharsets.US_ASCII);
    int n = 0;
    for (int k = 0; k < 2000; k++) {
      for (byte x : c) {
        slow.feed(new byte[] {x}, 0, 1);
        if (slow.next() != null) {
          n++;
        }
      }
    }
    assertEquals(2000, n);
  }

  @Test
  void sseDetails() throws Exception {
    SseParser p = new SseParser();
    List<SseParser.Event> got = new ArrayList<>();
    byte[] t =
        ": comment\r\nretry: 10\r\nid: 7\r\ndata: a\r\ndata:b\r\r\ndata\n\n"
            .getBytes(StandardCharsets.UTF_8);
    p.feed(t, 0, t.length, got::add);
    assertEquals(2, got.size());
    assertEquals(new SseParser.Event("7", null, "a\nb"), got.get(0));
    assertEquals(new SseParser.Event(null, null, ""), got.get(1));
  }

  @Test
  void urls() {
    URI from = URI.create("http://127.0.0.1:9000/connect?uid=a&password=b");
    assertEquals(
        "http://127.0.0.1:9100",
        Client.nodeUrl(Client.resolve(from, "http://127.0.0.1:9100/connect?uid=a")));
    assertEquals("http://127.0.0.1:9000", Client.nodeUrl(Client.resolve(from, "/connect?uid=a")));
    assertEquals("https://h:443", Client.nodeUrl(URI.create("wss://h/connect")));
    assertThrows(IllegalArgumentException.class, () -> Client.resolve(from, "ftp://x/"));
    assertThrows(IllegalArgumentException.class, () -> Client.resolve(from, ""));
    assertThrows(IllegalArgumentException.class, () -> new Client("ftp://x", "u", "p", null, null));
    assertThrows(IllegalArgumentException.class, () -> new Client("http://x", "", "p", null, null));
    assertThrows(IllegalArgumentException.class, () -> new Client("http://x", "u", "", null, null));
  }

  @Test
  void webSocketFragmentsWithAPingBetween() throws Exception {
    WebSocketCodec.Reader r = new WebSocketCodec.Reader(1 << 20);
    byte[] a =
        WebSocketCodec.encodeFrame(
            WebSocketCodec.OP_TEXT, false, "{\"y\":".getBytes(StandardCharsets.UTF_8), null);
    byte[] ping = WebSocketCodec.encodeFrame(WebSocketCodec.OP_PING, true, new byte[] {1}, null);
    byte[] b =
        WebSocketCodec.encodeFrame(
            WebSocketCodec.OP_CONTINUATION, true, "0}".getBytes(StandardCharsets.UTF_8), null);
    r.feed(a, 0, a.length);
    assertNull(r.next());
    r.feed(ping, 0, ping.length);
    assertEquals(WebSocketCodec.OP_PING, r.next().opcode);
    r.feed(b, 0, b.length);
    WebSocketCodec.Event e = r.next();
    assertEquals(WebSocketCodec.OP_TEXT, e.opcode);
    assertEquals("{\"y\":0}", new String(e.payload, StandardCharsets.UTF_8));
    // A message over the limit across fragments: 1009.
    WebSocketCodec.Reader small = new WebSocketCodec.Reader(100);
    byte[] part = WebSocketCodec.encodeFrame(WebSocketCodec.OP_TEXT, false, new byte[80], null);
    byte[] more =
        WebSocketCodec.encodeFrame(WebSocketCodec.OP_CONTINUATION, true, new byte[80], null);
    small.feed(part, 0, part.length);
    small.feed(more, 0, more.length);
    WebSocketProtocolException tooBig = assertThrows(WebSocketProtocolException.class, small::next);
    assertEquals(1009, tooBig.closeCode());
  }

  @Test
  void webSocketAccept() {
    // RFC 6455 §1.3's example.
    assertEquals(
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", WebSocketCodec.acceptFor("dGhlIHNhbXBsZSBub25jZQ=="));
  }
}
