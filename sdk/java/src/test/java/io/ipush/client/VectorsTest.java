package io.ipush.client;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** The shared vectors in sdk/vectors/: every vector decodes, and the encoders reproduce them. */
class VectorsTest {
  static Path dir;

  @BeforeAll
  static void locate() {
    dir = TestServer.repoRoot().resolve("sdk/vectors");
    if (!Files.isRegularFile(dir.resolve("messages.json"))) {
      String msg = "shared vectors not found at " + dir;
      if (TestServer.inCi()) {
        fail(msg);
      }
      System.out.println("skipped: " + msg);
      Assumptions.abort("skipped: " + msg);
    }
  }

  @SuppressWarnings("unchecked")
  static Map<String, Object> load(String name) throws IOException, ProtocolException {
    return Json.parseObject(
        new String(Files.readAllBytes(dir.resolve(name)), StandardCharsets.UTF_8));
  }

  @SuppressWarnings("unchecked")
  static List<Map<String, Object>> list(Map<String, Object> m, String key) {
    Object v = m.get(key);
    assertNotNull(v, "vectors: missing " + key);
    return (List<Map<String, Object>>) v;
  }

  @SuppressWarnings("unchecked")
  static Map<String, Object> obj(Object o) {
    return (Map<String, Object>) o;
  }

  static byte[] hex(String s) {
    byte[] b = new byte[s.length() / 2];
    for (int i = 0; i < b.length; i++) {
      b[i] =
          (byte)
              (Character.digit(s.charAt(2 * i), 16) << 4
                  | Character.digit(s.charAt(2 * i + 1), 16));
    }
    return b;
  }

  static String hexOf(byte[] b) {
    char[] digits = "0123456789abcdef".toCharArray();
    char[] out = new char[b.length * 2];
    for (int i = 0; i < b.length; i++) {
      out[2 * i] = digits[(b[i] >> 4) & 0xf];
      out[2 * i + 1] = digits[b[i] & 0xf];
    }
    return new String(out);
  }

  /**
   * The split points to try: every byte of short inputs; for long ones (the 70,000-byte body) every
   * byte of the first and last 64 and every 1999th in between, so the suite stays fast.
   */
  static List<Integer> cuts(int len) {
    List<Integer> c = new ArrayList<>();
    for (int i = 0; i <= len; i++) {
      if (len <= 4096 || i < 64 || i > len - 64 || i % 1999 == 0) {
        c.add(i);
      }
    }
    return c;
  }

  @Test
  void messagesDecodeAndEncodeExactly() throws Exception {
    List<Map<String, Object>> ms = list(load("messages.json"), "messages");
    assertTrue(ms.size() >= 10, "too few message vectors");
    for (Map<String, Object> v : ms) {
      String name = (String) v.get("name");
      Message want = Message.fromMap(obj(v.get("value")));
      byte[] json = ((String) v.get("json_text")).getBytes(StandardCharsets.UTF_8);
      byte[] mp = hex((String) v.get("msgpack_hex"));
      assertEquals(want, Codec.JSON.decode(json), name + ": JSON decode");
      assertEquals(want, Codec.MSGPACK.decode(mp), name + ": msgpack decode");
      // Our encoders write keys in the server's order (y f t c u b s) and the smallest
      // encodings, so they reproduce the vectors byte for byte.
      assertEquals(
          new String(json, StandardCharsets.UTF_8),
          new String(Codec.JSON.encode(want), StandardCharsets.UTF_8),
          name + ": JSON encode");
      assertEquals(hexOf(mp), hexOf(Codec.MSGPACK.encode(want)), name + ": msgpack encode");
      // And what we encode decodes back to the value.
      assertEquals(want, Codec.JSON.decode(Codec.JSON.encode(want)), name + ": JSON round trip");
      assertEquals(
          want, Codec.MSGPACK.decode(Codec.MSGPACK.encode(want)), name + ": msgpack round trip");
    }
  }

  /** Feeds a decoder the bytes split at {@code cut} (and once whole). */
  static List<Map<String, Object>> decodeChunked(
      byte[] bytes, Codec codec, int cut, boolean[] ended) throws ProtocolException {
    ChunkDecoder d = new ChunkDecoder();
    List<Map<String, Object>> out = new ArrayList<>();
    int[] bounds = cut < 0 ? new int[] {bytes.length} : new int[] {cut, bytes.length};
    int pos = 0;
    for (int b : bounds) {
      d.feed(bytes, pos, b - pos);
      pos = b;
      byte[] p;
      while ((p = d.next()) != null) {
        out.add(codec.decodeMap(p));
      }
    }
    ended[0] = d.finish();
    return out;
  }

  @Test
  void chunkedStreamsSplitAtEveryByte() throws Exception {
    Map<String, Object> f = load("chunked.json");
    for (Map<String, Object> s : list(f, "streams")) {
      String name = (String) s.get("name");
      Codec codec = "msgpack".equals(s.get("codec")) ? Codec.MSGPACK : Codec.JSON;
      byte[] bytes = hex((String) s.get("bytes_hex"));
      @SuppressWarnings("unchecked")
      List<Object> want = (List<Object>) s.get("messages");
      List<Integer> cuts = cuts(bytes.length);
      cuts.add(-1);
      for (int cut : cuts) {
        boolean[] ended = new boolean[1];
        List<Map<String, Object>> got = decodeChunked(bytes, codec, cut, ended);
        assertEquals(want.size(), got.size(), name + " cut " + cut);
        for (int i = 0; i < want.size(); i++) {
          assertEquals(obj(want.get(i)), got.get(i), name + " message " + i + " cut " + cut);
        }
        assertTrue(ended[0], name + ": the last chunk ends the stream");
      }
      Map<String, Object> last = got(bytes, codec);
      if ("error".equals(s.get("end"))) {
        assertEquals(s.get("error"), last.get("error"), name);
      } else {
        assertNull(last.get("error"), name);
      }
    }
    for (Map<String, Object> m : list(f, "malformed")) {
      String name = (String) m.get("name");
      byte[] bytes = hex((String) m.get("bytes_hex"));
      for (int cut = -1; cut <= bytes.length; cut++) {
        final int c = cut;
        assertThrows(
            ProtocolException.class,
            () -> decodeChunked(bytes, Codec.JSON, c, new boolean[1]),
            name + " (" + m.get("why") + ") cut " + cut);
      }
    }
  }

  private static Map<String, Object> got(byte[] bytes, Codec codec) throws ProtocolException {
    List<Map<String, Object>> all = decodeChunked(bytes, codec, -1, new boolean[1]);
    return all.get(all.size() - 1);
  }

  @Test
  void webSocketFrames() throws Exception {
    Map<String, Object> f = load("websocket.json");
    List<Map<String, Object>> frames = list(f, "frames");
    for (Map<String, Object> v : frames) {
      String name = (String) v.get("name");
      byte[] bytes = hex((String) v.get("hex"));
      int opcode = ((Long) v.get("opcode")).intValue();
      boolean fin = (Boolean) v.get("fin");
      boolean masked = (Boolean) v.get("masked");
      byte[] payload = hex((String) v.get("payload_hex"));
      // Raw frame parse: header fields and unmasked payload.
      WebSocketCodec.Frame fr = WebSocketCodec.parseFrame(bytes, 0, bytes.length, 1L << 24);
      assertNotNull(fr, name);
      assertEquals(bytes.length, fr.length, name);
      assertEquals(opcode, fr.opcode, name);
      assertEquals(fin, fr.fin, name);
      assertEquals(masked, fr.masked, name);
      assertArrayEquals(payload, fr.payload, name);
      for (int cut : cuts(bytes.length - 1)) {
        assertNull(
            WebSocketCodec.parseFrame(bytes, 0, cut, 1L << 24), name + " needs more at " + cut);
      }
      // Encoding: client frames with the vector's mask, server frames unmasked.
      byte[] mask = masked ? hex((String) v.get("mask_hex")) : null;
      assertEquals(
          hexOf(bytes), hexOf(WebSocketCodec.encodeFrame(opcode, fin, payload, mask)), name);
      if (v.get("close_code") != null) {
        byte[] p =
            WebSocketCodec.closePayload(
                ((Long) v.get("close_code")).intValue(), (String) v.get("close_reason"));
        assertArrayEquals(payload, p, name + " close payload");
      }
      // Server frames through the client's reader, split at every byte.
      if ("server_to_client".equals(v.get("direction"))) {
        for (int cut : cuts(bytes.length)) {
          WebSocketCodec.Reader r = new WebSocketCodec.Reader(1L << 24);
          r.feed(bytes, 0, cut);
          WebSocketCodec.Event e = r.next();
          if (e == null) {
            r.feed(bytes, cut, bytes.length - cut);
            e = r.next();
          }
          assertNotNull(e, name);
          assertEquals(opcode, e.opcode, name);
          if (opcode == WebSocketCodec.OP_CLOSE) {
            assertEquals(((Long) v.get("close_code")).intValue(), e.closeCode, name);
            assertEquals(v.get("close_reason"), e.closeReason, name);
          } else {
            assertArrayEquals(payload, e.payload, name);
          }
          if (opcode == WebSocketCodec.OP_TEXT) {
            assertEquals(v.get("payload_text"), new String(e.payload, StandardCharsets.UTF_8));
            Codec.JSON.decodeMap(e.payload);
          } else if (opcode == WebSocketCodec.OP_BINARY) {
            Codec.MSGPACK.decodeMap(e.payload);
          }
        }
      }
    }
    // The client's fragmented message (start + continuation) reassembles on a reader of client
    // frames.
    WebSocketCodec.Reader server = new WebSocketCodec.Reader(1 << 20, true);
    for (Map<String, Object> v : frames) {
      String n = (String) v.get("name");
      if (n.equals("text_fragment_start") || n.equals("continuation_final")) {
        byte[] b = hex((String) v.get("hex"));
        server.feed(b, 0, b.length);
      }
    }
    WebSocketCodec.Event whole = server.next();
    assertNotNull(whole);
    assertEquals("{\"y\":0}", new String(whole.payload, StandardCharsets.UTF_8));

    for (Map<String, Object> m : list(f, "malformed")) {
      String name = (String) m.get("name");
      byte[] bytes = hex((String) m.get("hex"));
      int want = ((Long) m.get("expect_close_code")).intValue();
      WebSocketCodec.Reader r = new WebSocketCodec.Reader(1L << 24);
      r.feed(bytes, 0, bytes.length);
      WebSocketProtocolException e =
          assertThrows(WebSocketProtocolException.class, r::next, name + ": " + m.get("why"));
      assertEquals(want, e.closeCode(), name);
    }
  }

  @Test
  void sseStreamsSplitAtEveryByte() throws Exception {
    for (Map<String, Object> s : list(load("sse.json"), "streams")) {
      String name = (String) s.get("name");
      byte[] text = ((String) s.get("text")).getBytes(StandardCharsets.UTF_8);
      List<Map<String, Object>> want = list(s, "events");
      for (int cut : cuts(text.length)) {
        SseParser p = new SseParser();
        List<SseParser.Event> got = new ArrayList<>();
        p.feed(text, 0, cut, got::add);
        p.feed(text, cut, text.length - cut, got::add);
        assertEquals(want.size(), got.size(), name + " cut " + cut);
        for (int i = 0; i < want.size(); i++) {
          Map<String, Object> w = want.get(i);
          assertEquals(
              new SseParser.Event(
                  (String) w.get("id"), (String) w.get("event"), (String) w.get("data")),
              got.get(i),
              name + " event " + i);
          Map<String, Object> m =
              Codec.JSON.decodeMap(got.get(i).data.getBytes(StandardCharsets.UTF_8));
          if (w.get("id") != null) {
            assertEquals(Long.parseLong((String) w.get("id")), Message.fromMap(m).seq(), name);
          }
          if ("moved".equals(w.get("event"))) {
            assertEquals("moved", m.get("error"));
            assertTrue(((String) m.get("location")).startsWith("http://"));
          }
        }
      }
    }
  }

  @Test
  void errorVectors() throws Exception {
    Map<String, Object> f = load("errors.json");
    for (Map<String, Object> s : list(f, "stream")) {
      String name = (String) s.get("name");
      Map<String, Object> j =
          Codec.JSON.decodeMap(((String) s.get("json_text")).getBytes(StandardCharsets.UTF_8));
      Map<String, Object> m = Codec.MSGPACK.decodeMap(hex((String) s.get("msgpack_hex")));
      assertEquals(j, m, name);
      assertTrue(j.get("error") instanceof String, name);
      assertEquals(
          s.get("json_text"), new String(Codec.JSON.encodeMap(j), StandardCharsets.UTF_8), name);
      assertEquals(s.get("msgpack_hex"), hexOf(Codec.MSGPACK.encodeMap(m)), name);
    }
    for (Map<String, Object> h : list(f, "http")) {
      String name = (String) h.get("name");
      int status = ((Long) h.get("status")).intValue();
      if (status == 303) {
        String loc = (String) h.get("location");
        assertNotNull(loc, name);
        java.net.URI from = java.net.URI.create("http://127.0.0.1:9000/connect?uid=x&password=y");
        assertEquals(9100, Client.resolve(from, loc).getPort(), name);
        continue;
      }
      String body = (String) h.get("body_text");
      SimpleHttp.Response r =
          new SimpleHttp.Response(status, body.getBytes(StandardCharsets.UTF_8));
      String reason = SimpleHttp.errorReason(r);
      if (status >= 400) {
        assertEquals(Json.parseObject(body).get("error"), reason, name);
        assertFalse(reason.isEmpty(), name);
      }
    }
  }
}
