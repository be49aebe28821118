package io.ipush.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.FileInputStream;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.security.KeyStore;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLHandshakeException;
import javax.net.ssl.SSLServerSocket;
import javax.net.ssl.TrustManagerFactory;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * https/wss: a TLS front (a self-signed certificate for 127.0.0.1, made with the JDK's keytool)
 * forwarding to the real server; the client trusts it through {@code sslSocketFactory}, and refuses
 * it without.
 */
class TlsTest {
  private static final char[] PASS = "changeit".toCharArray();

  static Path keystore(Path dir) throws Exception {
    Path ks = dir.resolve("tls.p12");
    Path keytool = Paths.get(System.getProperty("java.home"), "bin", "keytool");
    Process p =
        new ProcessBuilder(
                keytool.toString(),
                "-genkeypair",
                "-alias",
                "ipush",
                "-keyalg",
                "EC",
                "-groupname",
                "secp256r1",
                "-dname",
                "CN=127.0.0.1",
                "-ext",
                "san=ip:127.0.0.1",
                "-validity",
                "2",
                "-storetype",
                "PKCS12",
                "-keystore",
                ks.toString(),
                "-storepass",
                "changeit",
                "-keypass",
                "changeit")
            .redirectErrorStream(true)
            .start();
    p.getInputStream().readAllBytes();
    assertTrue(p.waitFor(60, TimeUnit.SECONDS) && p.exitValue() == 0, "keytool failed");
    return ks;
  }

  static SSLContext context(Path ks) throws Exception {
    KeyStore store = KeyStore.getInstance("PKCS12");
    try (InputStream in = new FileInputStream(ks.toFile())) {
      store.load(in, PASS);
    }
    KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
    kmf.init(store, PASS);
    TrustManagerFactory tmf =
        TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
    tmf.init(store);
    SSLContext ctx = SSLContext.getInstance("TLS");
    ctx.init(kmf.getKeyManagers(), tmf.getTrustManagers(), null);
    return ctx;
  }

  static void pump(InputStream in, OutputStream out, List<Socket> both) {
    Thread t =
        new Thread(
            () -> {
              byte[] b = new byte[16384];
              try {
                int n;
                while ((n = in.read(b)) >= 0) {
                  out.write(b, 0, n);
                  out.flush();
                }
              } catch (Exception ignored) {
                // one side closed
              }
              for (Socket s : both) {
                try {
                  s.close();
                } catch (Exception ignored) {
                  // closing
                }
              }
            },
            "tls-pump");
    t.setDaemon(true);
    t.start();
  }

  static Path dir;
  static TestServer server;
  static SSLContext ctx;
  static SSLServerSocket front;
  static final List<Socket> open = new ArrayList<>();

  @BeforeAll
  static void start() throws Exception {
    server = TestServer.start();
    dir = Files.createTempDirectory("ipush-java-tls-");
    ctx = context(keystore(dir));
    front =
        (SSLServerSocket)
            ctx.getServerSocketFactory()
                .createServerSocket(0, 50, InetAddress.getByName("127.0.0.1"));
    Thread acceptor =
        new Thread(
            () -> {
              while (true) {
                try {
                  Socket tls = front.accept();
                  Socket plain = new Socket("127.0.0.1", server.clientPort);
                  List<Socket> both = List.of(tls, plain);
                  synchronized (open) {
                    open.addAll(both);
                  }
                  pump(tls.getInputStream(), plain.getOutputStream(), both);
                  pump(plain.getInputStream(), tls.getOutputStream(), both);
                } catch (Exception e) {
                  return;
                }
              }
            },
            "tls-front");
    acceptor.setDaemon(true);
    acceptor.start();
  }

  @AfterAll
  static void stop() throws Exception {
    if (front != null) {
      front.close();
    }
    synchronized (open) {
      for (Socket s : open) {
        s.close();
      }
    }
    if (server != null) {
      server.close();
    }
    if (dir != null) {
      Files.deleteIfExists(dir.resolve("tls.p12"));
      Files.deleteIfExists(dir);
    }
  }

  @ParameterizedTest
  @EnumSource(
      value = Transport.class,
      names = {"WEBSOCKET", "CHUNKED"})
  void streamThroughTls(Transport t) throws Exception {
    String url =
        (t == Transport.WEBSOCKET ? "wss" : "https") + "://127.0.0.1:" + front.getLocalPort();
    // Without trusting the certificate: a handshake error, never a stream.
    Recorder refused = new Recorder();
    ClientOptions plainTrust = ClientOptions.builder().transport(t).backoff(200, 1000).build();
    try (Client c = new Client(url, "tls-" + t, "pw", plainTrust, refused)) {
      c.connect();
      refused.await("a TLS error", 10_000, () -> !refused.errors.isEmpty());
      Throwable e = refused.errors.get(0);
      while (e.getCause() != null && !(e instanceof SSLHandshakeException)) {
        e = e.getCause();
      }
      assertTrue(e instanceof SSLHandshakeException, refused.events.toString());
      assertEquals(0, refused.connects());
    }
    // Trusting it through the option: the stream works.
    Recorder r = new Recorder();
    ClientOptions o =
        ClientOptions.builder()
            .transport(t)
            .backoff(50, 200)
            .sslSocketFactory(ctx.getSocketFactory())
            .build();
    try (Client c = new Client(url, "tls-" + t, "pw", o, r)) {
      c.connect();
      r.awaitConnects(1, 10_000);
      assertEquals("https://127.0.0.1:" + front.getLocalPort(), r.nodes.get(0));
      server.admin().publish("tls-" + t, "op", "secret");
      r.awaitMessages(1, 10_000);
      assertEquals("secret", r.messages().get(0).body());
      c.sendToUser("tls-" + t, "back");
      r.awaitMessages(2, 10_000);
    }
  }
}
