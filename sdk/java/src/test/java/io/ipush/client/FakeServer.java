package io.ipush.client;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** A tiny scripted HTTP server for tests: each accepted connection's head goes to a handler. */
final class FakeServer implements AutoCloseable {
  interface Handler {
    void handle(int index, String head, Socket s) throws Exception;
  }

  private final ServerSocket listener;
  private final Thread acceptor;
  private final List<Socket> sockets = new ArrayList<>();
  private final List<String> heads = new ArrayList<>();
  private final List<Long> headTimes = new ArrayList<>();
  private volatile boolean closed;

  FakeServer(Handler h) throws IOException {
    listener = new ServerSocket(0, 50, InetAddress.getByName("127.0.0.1"));
    acceptor =
        new Thread(
            () -> {
              while (!closed) {
                try {
                  Socket s = listener.accept();
                  int index;
                  synchronized (this) {
                    sockets.add(s);
                    index = sockets.size() - 1;
                  }
                  Thread t =
                      new Thread(
                          () -> {
                            try {
                              String head = readHead(s.getInputStream());
                              synchronized (this) {
                                heads.add(head);
                                headTimes.add(System.nanoTime());
                                notifyAll();
                              }
                              h.handle(index, head, s);
                            } catch (Exception e) {
                              // the client went away: fine for a fake
                            }
                          },
                          "fake-conn");
                  t.setDaemon(true);
                  t.start();
                } catch (IOException e) {
                  return;
                }
              }
            },
            "fake-accept");
    acceptor.setDaemon(true);
    acceptor.start();
  }

  String url() {
    return "http://127.0.0.1:" + listener.getLocalPort();
  }

  synchronized int connections() {
    return heads.size();
  }

  /** When each connection's head arrived, System.nanoTime(), in arrival order. */
  synchronized List<Long> headTimes() {
    return new ArrayList<>(headTimes);
  }

  synchronized List<String> heads() {
    return new ArrayList<>(heads);
  }

  static String readHead(InputStream in) throws IOException {
    ByteArrayOutputStream b = new ByteArrayOutputStream();
    while (true) {
      int c = in.read();
      if (c < 0) {
        throw new IOException("eof in head");
      }
      b.write(c);
      byte[] x = b.toByteArray();
      int n = x.length;
      if (n >= 4 && x[n - 4] == '\r' && x[n - 3] == '\n' && x[n - 2] == '\r' && x[n - 1] == '\n') {
        break;
      }
    }
    return new String(b.toByteArray(), StandardCharsets.ISO_8859_1);
  }

  static String wsAccept(String head) {
    Matcher m = Pattern.compile("(?i)sec-websocket-key: *([^\\r]+)").matcher(head);
    if (!m.find()) {
      throw new IllegalStateException("no key in " + head);
    }
    return WebSocketCodec.acceptFor(m.group(1).trim());
  }

  static void write(Socket s, String text) throws IOException {
    write(s, text.getBytes(StandardCharsets.UTF_8));
  }

  static void write(Socket s, byte[] b) throws IOException {
    s.getOutputStream().write(b);
    s.getOutputStream().flush();
  }

  static String chunk(String payload) {
    byte[] b = payload.getBytes(StandardCharsets.UTF_8);
    return Integer.toHexString(b.length) + "\r\n" + payload + "\r\n";
  }

  static final String CHUNKED_HEAD =
      "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Type: text/html; charset=utf-8\r\n"
          + "Transfer-Encoding: chunked\r\n\r\n";
  static final String SSE_HEAD =
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n";

  static String wsHead(String requestHead) {
    return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + "Sec-WebSocket-Accept: "
        + wsAccept(requestHead)
        + "\r\n\r\n";
  }

  @Override
  public void close() throws IOException {
    closed = true;
    listener.close();
    synchronized (this) {
      for (Socket s : sockets) {
        s.close();
      }
    }
  }
}
