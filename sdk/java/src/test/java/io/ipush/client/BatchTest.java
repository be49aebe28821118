package io.ipush.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * {@link AdminClient#publishBatch} against the real server: per-item results and delivery in order,
 * the split into requests, idempotency_key passed, checks before sending.
 */
class BatchTest {
  static TestServer server;
  static AdminClient admin;

  @BeforeAll
  static void start() throws Exception {
    server = TestServer.start();
    admin = server.admin();
  }

  @AfterAll
  static void stop() {
    if (server != null) {
      server.close();
    }
  }

  static Client listen(String uid, Recorder r) {
    ClientOptions o = ClientOptions.builder().transport(Transport.WEBSOCKET).build();
    Client c = new Client(server.clientUrl(), uid, "pw", o, r);
    c.connect();
    r.awaitConnects(1, 10_000);
    return c;
  }

  static long pubRequests() throws IOException {
    Map<?, ?> req = (Map<?, ?>) admin.stats().get("request");
    return ((Number) req.get("Pub")).longValue();
  }

  @Test
  void mixedBatchAnswersAndArrivesInOrder() throws Exception {
    admin.sub("bxa", "bxc");
    Recorder ra = new Recorder();
    Recorder rb = new Recorder();
    Client a = listen("bxa", ra);
    Client b = listen("bxb", rb);
    try {
      List<BatchResult> res =
          admin.publishBatch(
              Arrays.asList(
                  BatchItem.toUser("bxa", "op", "one"),
                  BatchItem.toUser("bxb", "op", "for b").ttl(60L),
                  BatchItem.toChannel("bxc", "op", "two"),
                  BatchItem.toUser("bad uid", "op", "x"),
                  BatchItem.toUser("bxa", "op", "three é").idempotencyKey("batch:1")));
      assertEquals(5, res.size());
      for (int i = 0; i < 5; i++) {
        assertEquals(i != 3, res.get(i).ok(), "item " + i + ": " + res.get(i));
      }
      AdminException e = (AdminException) res.get(3).error();
      assertEquals(400, e.status());
      assertEquals("invalid to", e.reason());
      ra.awaitMessages(3, 10_000);
      assertEquals(Arrays.asList("one", "two", "three é"), ra.bodies());
      assertEquals(Arrays.asList(1L, 2L, 3L), ra.seqs());
      assertEquals(Message.CHANNEL_MESSAGE, ra.messages().get(1).type());
      rb.awaitMessages(1, 10_000);
      assertEquals(Arrays.asList("for b"), rb.bodies());
    } finally {
      a.close();
      b.close();
    }
  }

  @Test
  void aLongListIsSplitInOrder() throws Exception {
    AdminClient small = new AdminClient(server.adminUrl(), null, 10_000, 3, 1 << 20);
    Recorder r = new Recorder();
    List<String> bodies = new ArrayList<>();
    List<BatchItem> items = new ArrayList<>();
    for (int i = 0; i < 8; i++) {
      bodies.add("m" + i);
      items.add(BatchItem.toUser("bsp", "op", "m" + i));
    }
    Client c = listen("bsp", r);
    try {
      long before = pubRequests();
      List<BatchResult> res = small.publishBatch(items);
      // 3 + 3 + 2 lines: three /pub/batch requests, each counted as one Pub request.
      assertEquals(3, pubRequests() - before);
      assertEquals(8, res.size());
      assertTrue(res.stream().allMatch(BatchResult::ok), res.toString());
      r.awaitMessages(8, 10_000);
      assertEquals(bodies, r.bodies());
      assertEquals(Arrays.asList(1L, 2L, 3L, 4L, 5L, 6L, 7L, 8L), r.seqs());
    } finally {
      c.close();
    }
    // A byte limit splits too: each line is 34 bytes, so 2 + 2 + 1 lines.
    AdminClient byBytes = new AdminClient(server.adminUrl(), null, 10_000, 100, 100);
    long before = pubRequests();
    List<BatchItem> five = new ArrayList<>();
    for (int i = 0; i < 5; i++) {
      five.add(BatchItem.toUser("bsb", "op", "b" + i));
    }
    assertTrue(byBytes.publishBatch(five).stream().allMatch(BatchResult::ok));
    assertEquals(3, pubRequests() - before);
    assertEquals(5, admin.msg("bsb").size());
    assertTrue(admin.publishBatch(Collections.emptyList()).isEmpty());
  }

  @Test
  void idempotencyKeyIsPassedAndItemsAreChecked() throws Exception {
    List<BatchResult> res =
        admin.publishBatch(
            Arrays.asList(
                BatchItem.toUser("bik", "op", "keyed").idempotencyKey("order-17:a"),
                // The server checks a key it is given (1-128 of A-Z a-z 0-9 _ . : -): proof it is
                // sent.
                BatchItem.toUser("bik", "op", "bad key").idempotencyKey("not a key")));
    assertTrue(res.get(0).ok());
    assertNull(res.get(0).error());
    AdminException e = (AdminException) res.get(1).error();
    assertEquals(400, e.status());
    assertTrue(e.reason().startsWith("invalid idempotency_key"), e.reason());
    for (List<BatchItem> bad :
        List.of(
            List.of(
                BatchItem.toUser("bik", "op", "never sent"),
                BatchItem.toUser("bik", "op", "x").ttl(-1L)),
            List.of(BatchItem.toUser("", "op", "x")),
            List.of(BatchItem.toChannel("c", "", "x")),
            List.of(BatchItem.toUser("bik", "op", null)))) {
      assertThrows(IllegalArgumentException.class, () -> admin.publishBatch(bad));
    }
    assertEquals(1, admin.msg("bik").size());
    assertEquals("keyed", admin.msg("bik").get(0).body());
  }

  @Test
  void aFailedRequestFailsItsItemsAndTheLaterOnes() throws Exception {
    int[] free = TestServer.freePorts(1);
    AdminClient dead = new AdminClient("http://127.0.0.1:" + free[0], null, 2000, 1, 1 << 20);
    List<BatchResult> res =
        dead.publishBatch(
            Arrays.asList(BatchItem.toUser("u", "op", "a"), BatchItem.toUser("u", "op", "b")));
    assertEquals(2, res.size());
    assertFalse(res.get(0).ok());
    assertFalse(res.get(0).error() instanceof AdminException, res.get(0).toString());
    assertSame(res.get(0).error(), res.get(1).error());
  }
}
