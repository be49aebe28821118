package io.ipush.client;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UnsupportedEncodingException;
import java.net.HttpURLConnection;
import java.net.URL;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import javax.net.ssl.HttpsURLConnection;
import javax.net.ssl.SSLSocketFactory;

/** Request/response HTTP over {@link HttpURLConnection} (on Android too), for admin and /send. */
final class SimpleHttp {
  private SimpleHttp() {}

  static final class Response {
    final int status;
    final byte[] body;

    Response(int status, byte[] body) {
      this.status = status;
      this.body = body;
    }

    String text() {
      return new String(body, StandardCharsets.UTF_8);
    }
  }

  static Response request(
      String method,
      String url,
      byte[] body,
      String contentType,
      SSLSocketFactory ssl,
      int timeoutMs)
      throws IOException {
    HttpURLConnection c = (HttpURLConnection) new URL(url).openConnection();
    try {
      if (ssl != null && c instanceof HttpsURLConnection) {
        ((HttpsURLConnection) c).setSSLSocketFactory(ssl);
      }
      c.setRequestMethod(method);
      c.setConnectTimeout(timeoutMs);
      c.setReadTimeout(timeoutMs);
      c.setUseCaches(false);
      c.setInstanceFollowRedirects(false);
      c.setRequestProperty("Accept", "application/json");
      if (body != null) {
        c.setDoOutput(true);
        c.setFixedLengthStreamingMode(body.length);
        c.setRequestProperty("Content-Type", contentType);
        try (OutputStream o = c.getOutputStream()) {
          o.write(body);
        }
      }
      int status = c.getResponseCode();
      InputStream in = status >= 400 ? c.getErrorStream() : c.getInputStream();
      byte[] data = in == null ? new byte[0] : readAll(in);
      return new Response(status, data);
    } finally {
      c.disconnect();
    }
  }

  static byte[] readAll(InputStream in) throws IOException {
    try (InputStream i = in) {
      ByteArrayOutputStream b = new ByteArrayOutputStream();
      byte[] buf = new byte[8192];
      int n;
      while ((n = i.read(buf)) >= 0) {
        b.write(buf, 0, n);
      }
      return b.toByteArray();
    }
  }

  /** Percent-encodes a query value (space as %20). */
  static String enc(String s) {
    try {
      return URLEncoder.encode(s, "UTF-8").replace("+", "%20");
    } catch (UnsupportedEncodingException e) {
      throw new IllegalStateException(e);
    }
  }

  /** {@code a=1&b=2} from ordered pairs, skipping null values. */
  static String query(Map<String, String> params) {
    StringBuilder sb = new StringBuilder();
    for (Map.Entry<String, String> e : params.entrySet()) {
      if (e.getValue() == null) {
        continue;
      }
      if (sb.length() > 0) {
        sb.append('&');
      }
      sb.append(enc(e.getKey())).append('=').append(enc(e.getValue()));
    }
    return sb.toString();
  }

  /** The {@code error} of an {@code {"error":...}} body, or the body text itself. */
  static String errorReason(Response r) {
    String t = r.text();
    try {
      Object e = Json.parseObject(t).get("error");
      if (e instanceof String) {
        return (String) e;
      }
    } catch (ProtocolException ignored) {
      // not JSON: the text is the reason
    }
    return t.isEmpty() ? "HTTP " + r.status : t;
  }
}
