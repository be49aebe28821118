package io.ipush.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.concurrent.atomic.AtomicInteger;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import org.junit.jupiter.api.Test;

/** --auth=jwt: the token callback runs before every (re)connect. */
class JwtTest {
  static final String SECRET = "test-secret-for-the-java-sdk";

  static String jwt(String sub, long exp, String secret) throws Exception {
    Base64.Encoder b = Base64.getUrlEncoder().withoutPadding();
    String h =
        b.encodeToString("{\"alg\":\"HS256\",\"typ\":\"JWT\"}".getBytes(StandardCharsets.UTF_8));
    String p =
        b.encodeToString(
            ("{\"sub\":" + Json.write(sub) + ",\"exp\":" + exp + "}")
                .getBytes(StandardCharsets.UTF_8));
    Mac mac = Mac.getInstance("HmacSHA256");
    mac.init(new SecretKeySpec(secret.getBytes(StandardCharsets.UTF_8), "HmacSHA256"));
    String s = b.encodeToString(mac.doFinal((h + "." + p).getBytes(StandardCharsets.US_ASCII)));
    return h + "." + p + "." + s;
  }

  @Test
  void tokenIsRefreshedOnEveryConnect() throws Exception {
    try (TestServer server = TestServer.start("--auth=jwt", "--auth_secret=" + SECRET)) {
      AtomicInteger calls = new AtomicInteger();
      TokenProvider tokens =
          () -> {
            calls.incrementAndGet();
            return jwt("jwt-user", System.currentTimeMillis() / 1000 + 60, SECRET);
          };
      Recorder r = new Recorder();
      ClientOptions o =
          ClientOptions.builder().transport(Transport.WEBSOCKET).backoff(20, 200).build();
      try (Client c = new Client(server.clientUrl(), "jwt-user", tokens, o, r)) {
        c.connect();
        r.awaitConnects(1, 10_000);
        assertEquals(1, calls.get());
        server.admin().disconnect("jwt-user");
        r.awaitConnects(2, 10_000);
        assertTrue(calls.get() >= 2, "called again for the reconnect: " + calls.get());
        server.admin().publish("jwt-user", "op", "authenticated");
        r.awaitMessages(1, 10_000);
      }

      // A token signed with another secret: 401, an error event, no stream.
      Recorder bad = new Recorder();
      TokenProvider wrong = () -> jwt("jwt-user", System.currentTimeMillis() / 1000 + 60, "other");
      try (Client c = new Client(server.clientUrl(), "jwt-user", wrong, o, bad)) {
        c.connect();
        bad.await("401", 10_000, () -> !bad.errors.isEmpty());
        ServerErrorException e = (ServerErrorException) bad.errors.get(0);
        assertEquals(401, e.status());
        assertEquals("auth failed", e.reason());
        assertEquals(0, bad.connects());
      }

      // A fixed password that is refused (401) stops the client: retrying cannot help.
      Recorder fixed = new Recorder();
      try (Client c = new Client(server.clientUrl(), "jwt-user", "not-a-jwt", o, fixed)) {
        c.connect();
        fixed.await("401", 10_000, () -> !fixed.errors.isEmpty());
        Thread.sleep(500); // backoff here is at most 200 ms: a retry would show
        assertEquals(1, fixed.errorCount(), fixed.events.toString());
        assertEquals(401, ((ServerErrorException) fixed.errors.get(0)).status());
        c.connect(); // the application may try again
        fixed.await("a second 401", 10_000, () -> fixed.errors.size() == 2);
      }
    }
  }
}
