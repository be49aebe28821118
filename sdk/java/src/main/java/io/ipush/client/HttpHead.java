package io.ipush.client;

import java.io.ByteArrayOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;

/** An HTTP/1.1 response head: status line and headers (names lower-cased). */
final class HttpHead {
  static final int MAX_HEAD = 16 * 1024;

  final int status;
  final String reasonPhrase;
  final Map<String, String> headers;

  HttpHead(int status, String reasonPhrase, Map<String, String> headers) {
    this.status = status;
    this.reasonPhrase = reasonPhrase;
    this.headers = headers;
  }

  String header(String name) {
    return headers.get(name.toLowerCase(Locale.ROOT));
  }

  /** Reads a head up to its blank line, leaving the body in {@code in}. */
  static HttpHead read(InputStream in) throws IOException, ProtocolException {
    ByteArrayOutputStream b = new ByteArrayOutputStream(512);
    int state = 0; // matched bytes of \r\n\r\n
    while (state < 4) {
      int c = in.read();
      if (c < 0) {
        throw new EOFException(
            b.size() == 0
                ? "connection closed before a response"
                : "connection closed in the response head");
      }
      b.write(c);
      if (b.size() > MAX_HEAD) {
        throw new ProtocolException("response head over " + MAX_HEAD + " bytes");
      }
      if (c == '\r') {
        state = (state == 2) ? 3 : 1;
      } else if (c == '\n') {
        state = (state == 1 || state == 3) ? state + 1 : 0;
      } else {
        state = 0;
      }
    }
    return parse(new String(b.toByteArray(), StandardCharsets.ISO_8859_1));
  }

  static HttpHead parse(String head) throws ProtocolException {
    String[] lines = head.split("\r\n");
    String sl = lines[0];
    if (!sl.startsWith("HTTP/1.") || sl.length() < 12 || sl.charAt(8) != ' ') {
      throw new ProtocolException("bad HTTP status line: " + sl);
    }
    int status;
    try {
      status = Integer.parseInt(sl.substring(9, 12));
    } catch (NumberFormatException e) {
      throw new ProtocolException("bad HTTP status line: " + sl);
    }
    String reason = sl.length() > 13 ? sl.substring(13) : "";
    Map<String, String> h = new LinkedHashMap<>();
    for (int i = 1; i < lines.length; i++) {
      String l = lines[i];
      if (l.isEmpty()) {
        continue;
      }
      int colon = l.indexOf(':');
      if (colon <= 0) {
        throw new ProtocolException("bad HTTP header line: " + l);
      }
      h.put(l.substring(0, colon).trim().toLowerCase(Locale.ROOT), l.substring(colon + 1).trim());
    }
    return new HttpHead(status, reason, h);
  }

  /** Reads a {@code Content-Length} body (at most 64 KiB), or nothing without one. */
  byte[] readBody(InputStream in) throws IOException {
    String cl = header("content-length");
    if (cl == null) {
      return new byte[0];
    }
    int n;
    try {
      n = Integer.parseInt(cl.trim());
    } catch (NumberFormatException e) {
      return new byte[0];
    }
    n = Math.max(0, Math.min(n, 64 * 1024));
    byte[] body = new byte[n];
    int got = 0;
    while (got < n) {
      int r = in.read(body, got, n - got);
      if (r < 0) {
        break;
      }
      got += r;
    }
    return got == n ? body : java.util.Arrays.copyOf(body, got);
  }
}
