package io.ipush.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** Every admin call against the real server, and its errors. */
class AdminClientTest {
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

  @Test
  void publishAndMsg() throws Exception {
    admin.publish("adm1", "op", "plain");
    admin.publish("adm1", "op", "with ttl and key é", 3600L, "key-1");
    admin.publish("adm1", "op", "ttl 0 is not stored", 0L, null);
    List<Message> m = admin.msg("adm1");
    assertEquals(2, m.size());
    assertEquals(Message.USER_MESSAGE, m.get(0).type());
    assertEquals("op", m.get(0).from());
    assertEquals("adm1", m.get(0).to());
    assertEquals("plain", m.get(0).body());
    assertEquals(Long.valueOf(1), m.get(0).seq());
    assertEquals("with ttl and key é", m.get(1).body());
    assertEquals(Long.valueOf(2), m.get(1).seq());
    assertTrue(admin.msg("nobody-here").isEmpty());
  }

  @Test
  void subPublishChannelUnsub() throws Exception {
    admin.sub("adm2", "room");
    admin.sub("adm3", "room");
    admin.publishChannel("room", "op", "to the room");
    admin.publishChannel("room", "op", "with ttl", 60L, "k");
    for (String u : new String[] {"adm2", "adm3"}) {
      List<Message> m = admin.msg(u);
      assertEquals(2, m.size(), u);
      assertEquals(Message.CHANNEL_MESSAGE, m.get(0).type());
      assertEquals("room", m.get(0).channel());
      assertEquals(u, m.get(0).to());
      assertEquals("to the room", m.get(0).body());
    }
    admin.unsub("adm3", "room");
    admin.publishChannel("room", "op", "after unsub");
    assertEquals(3, admin.msg("adm2").size());
    assertEquals(2, admin.msg("adm3").size());
  }

  @Test
  void shardStatsHealth() throws Exception {
    assertEquals("127.0.0.1:" + server.clientPort, admin.shard("anyone"));
    Map<String, Object> st = admin.stats();
    for (String k :
        new String[] {
          "auth_fail_number", "recv_type", "request", "throughput", "user", "server_start_timestamp"
        }) {
      assertTrue(st.containsKey(k), "stats has " + k + ": " + st.keySet());
    }
    Map<String, Object> h = admin.health();
    assertEquals("ok", h.get("status"));
    assertEquals(2L, h.get("cores"));
  }

  @Test
  void disconnectEndsTheStream() throws Exception {
    AdminException e = assertThrows(AdminException.class, () -> admin.disconnect("not-connected"));
    assertEquals(404, e.status());
    Recorder r = new Recorder();
    ClientOptions o = ClientOptions.builder().transport(Transport.CHUNKED).backoff(20, 200).build();
    try (Client c = new Client(server.clientUrl(), "adm-dc", "pw", o, r)) {
      c.connect();
      r.awaitConnects(1, 10_000);
      admin.disconnect("adm-dc");
      r.await("error event", 10_000, () -> !r.errors.isEmpty());
      ServerErrorException se = (ServerErrorException) r.errors.get(0);
      assertEquals("disconnected", se.reason());
      assertEquals(0, se.status());
      r.awaitConnects(2, 10_000);
    }
  }

  @Test
  void errorsCarryStatusAndReason() throws Exception {
    AdminException e = assertThrows(AdminException.class, () -> admin.sub("bad uid", "c"));
    assertEquals(400, e.status());
    assertEquals("invalid uid", e.reason());
    AdminException big =
        assertThrows(AdminException.class, () -> admin.publish("adm4", "op", "x".repeat(70_000)));
    assertEquals(413, big.status());
    assertTrue(big.reason().length() > 0);
    assertThrows(IllegalArgumentException.class, () -> admin.publish("", "op", "x"));
    assertThrows(IllegalArgumentException.class, () -> admin.publish("u", "op", "x", -1L, null));
    assertTrue(admin.msg("adm4").isEmpty(), "a refused publish stores nothing");
    // Nothing listening: an I/O error, not an AdminException.
    int[] free = TestServer.freePorts(1);
    AdminClient dead = new AdminClient("http://127.0.0.1:" + free[0], null, 2000);
    java.io.IOException io = assertThrows(java.io.IOException.class, dead::health);
    assertTrue(!(io instanceof AdminException), io.toString());
  }
}
