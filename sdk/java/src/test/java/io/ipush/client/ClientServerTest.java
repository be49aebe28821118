package io.ipush.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** The client against one real ipush_server (memory storage), every transport. */
class ClientServerTest {
  static TestServer server;
  static AdminClient admin;

  @BeforeAll
  static void start() throws Exception {
    server = TestServer.start("--heartbeat_interval_s=5");
    admin = server.admin();
  }

  @AfterAll
  static void stop() {
    if (server != null) {
      server.close();
    }
  }

  static ClientOptions.Builder fast() {
    return ClientOptions.builder().backoff(50, 500).autoAck(100, 10);
  }

  static Client client(String uid, ClientOptions o, Recorder r) {
    return new Client(server.clientUrl(), uid, "pw", o, r);
  }

  @ParameterizedTest
  @EnumSource(Transport.class)
  void receivesOverEveryTransport(Transport t) throws Exception {
    String uid = "recv-" + t.name().toLowerCase();
    Recorder r = new Recorder();
    try (Client c = client(uid, fast().transport(t).build(), r)) {
      c.connect();
      r.awaitConnects(1, 10_000);
      assertEquals(Arrays.asList(t), r.transports);
      assertEquals(server.clientUrl(), r.nodes.get(0));
      admin.publish(uid, "op", "one");
      admin.publish(uid, "op", "two \"quoted\" é 😀");
      admin.publish(uid, "op", "live only", 0L, null);
      r.awaitMessages(3, 10_000);
      List<Message> m = r.messages();
      assertEquals("one", m.get(0).body());
      assertEquals("op", m.get(0).from());
      assertEquals(uid, m.get(0).to());
      assertEquals(Long.valueOf(1), m.get(0).seq());
      assertEquals("two \"quoted\" é 😀", m.get(1).body());
      assertEquals(Long.valueOf(2), m.get(1).seq());
      assertNull(m.get(2).seq(), "ttl 0: no seq");
      assertEquals(2, c.lastSeq());

      // Subscribe, then a channel message sent by the client itself comes back to it.
      // The server handles a stream's messages in order: the subscribe is stored first.
      c.subscribe("chan-" + uid);
      c.sendToChannel("chan-" + uid, "to the channel");
      r.awaitMessages(4, 10_000);
      Message cm = r.messages().get(3);
      assertEquals(Message.CHANNEL_MESSAGE, cm.type());
      assertEquals("chan-" + uid, cm.channel());
      assertEquals(uid, cm.from());
      assertEquals("to the channel", cm.body());
      // A user message to another uid is stored for it.
      c.sendToUser(uid + "-peer", "hi peer");
      awaitOffline(uid + "-peer", 1);
      Message peer = admin.msg(uid + "-peer").get(0);
      assertEquals(uid, peer.from());
      assertEquals("hi peer", peer.body());
      c.unsubscribe("chan-" + uid);
    }
  }

  static void awaitOffline(String uid, int n) throws Exception {
    long deadline = System.currentTimeMillis() + 10_000;
    while (admin.msg(uid).size() < n) {
      if (System.currentTimeMillis() > deadline) {
        throw new AssertionError("no offline message for " + uid);
      }
      Thread.sleep(20);
    }
  }

  @ParameterizedTest
  @EnumSource(Transport.class)
  void manualAckEmptiesOfflineList(Transport t) throws Exception {
    String uid = "ack-" + t.name().toLowerCase();
    for (int i = 1; i <= 5; i++) {
      admin.publish(uid, "op", "m" + i);
    }
    assertEquals(5, admin.msg(uid).size());
    Recorder r = new Recorder();
    try (Client c = client(uid, fast().transport(t).manualAck().build(), r)) {
      c.connect();
      r.awaitMessages(5, 10_000);
      assertEquals(Arrays.asList(1L, 2L, 3L, 4L, 5L), r.seqs());
      c.ack(3);
      awaitOfflineSeqs(uid, Arrays.asList(4L, 5L));
      c.ack(5);
      awaitOfflineSeqs(uid, new ArrayList<>());
    }
  }

  @Test
  void autoAckIsBatched() throws Exception {
    String uid = "autoack";
    Recorder r = new Recorder();
    try (Client c = client(uid, fast().autoAck(200, 1000).build(), r)) {
      c.connect();
      r.awaitConnects(1, 10_000);
      for (int i = 1; i <= 4; i++) {
        admin.publish(uid, "op", "m" + i);
      }
      r.awaitMessages(4, 10_000);
      // Acked by the timer, once, with the highest seq.
      awaitOfflineSeqs(uid, new ArrayList<>());
    }
  }

  @Test
  void initialLastSeqDropsWhatTheAppHas() throws Exception {
    String uid = "initial-seq";
    for (int i = 1; i <= 3; i++) {
      admin.publish(uid, "op", "m" + i);
    }
    Recorder r = new Recorder();
    try (Client c = client(uid, fast().initialLastSeq(2).build(), r)) {
      c.connect();
      r.awaitMessages(1, 10_000);
      admin.publish(uid, "op", "m4");
      r.awaitMessages(2, 10_000);
      assertEquals(Arrays.asList(3L, 4L), r.seqs(), "1 and 2 were replayed and dropped");
      awaitOfflineSeqs(uid, new ArrayList<>());
    }
  }

  @Test
  void closeAcksWhatWasDelivered() throws Exception {
    String uid = "close-ack";
    Recorder r = new Recorder();
    Client c = client(uid, fast().transport(Transport.WEBSOCKET).autoAck(60_000, 1000).build(), r);
    try {
      c.connect();
      r.awaitConnects(1, 10_000);
      admin.publish(uid, "op", "a");
      admin.publish(uid, "op", "b");
      r.awaitMessages(2, 10_000);
      assertEquals(2, admin.msg(uid).size(), "not acked yet (the timer is a minute)");
    } finally {
      c.close();
    }
    r.await("disconnected", 10_000, () -> r.disconnects == 1);
    assertEquals("disconnected closed", r.events.get(r.events.size() - 1));
    awaitOfflineSeqs(uid, new ArrayList<>());
  }

  static void awaitOfflineSeqs(String uid, List<Long> want) throws Exception {
    long deadline = System.currentTimeMillis() + 10_000;
    List<Long> got;
    while (true) {
      got = new ArrayList<>();
      for (Message m : admin.msg(uid)) {
        got.add(m.seq());
      }
      if (got.equals(want) || System.currentTimeMillis() > deadline) {
        break;
      }
      Thread.sleep(20);
    }
    assertEquals(want, got, "offline seqs of " + uid);
  }

  @ParameterizedTest
  @EnumSource(
      value = Transport.class,
      names = {"WEBSOCKET", "CHUNKED"})
  void messagePack(Transport t) throws Exception {
    String uid = "mp-" + t.name().toLowerCase();
    Recorder r = new Recorder();
    ClientOptions o = fast().transport(t).codec(Codec.MSGPACK).build();
    try (Client c = client(uid, o, r)) {
      c.connect();
      r.awaitConnects(1, 10_000);
      admin.publish(uid, "op", "packed é");
      r.awaitMessages(1, 10_000);
      assertEquals("packed é", r.messages().get(0).body());
      // Client → server in MessagePack: a message to ourselves.
      c.sendToUser(uid, "self");
      r.awaitMessages(2, 10_000);
      assertEquals("self", r.messages().get(1).body());
      assertEquals(uid, r.messages().get(1).from());
      assertEquals(Long.valueOf(2), r.messages().get(1).seq());
    }
  }

  @Test
  void fallbackSkipsSseForMessagePack() {
    Recorder r = new Recorder();
    assertThrows(
        IllegalArgumentException.class,
        () -> ClientOptions.builder().transport(Transport.SSE).codec(Codec.MSGPACK).build());
    ClientOptions o =
        fast().transports(Transport.SSE, Transport.CHUNKED).codec(Codec.MSGPACK).build();
    try (Client c = client("mp-fallback", o, r)) {
      c.connect();
      r.awaitConnects(1, 10_000);
      assertEquals(Transport.CHUNKED, c.transport());
    }
  }

  @ParameterizedTest
  @EnumSource(Transport.class)
  void replacedStopsTheOlderClient(Transport t) throws Exception {
    String uid = "twice-" + t.name().toLowerCase();
    Recorder r1 = new Recorder();
    Recorder r2 = new Recorder();
    try (Client c1 = client(uid, fast().transport(t).build(), r1);
        Client c2 = client(uid, fast().build(), r2)) {
      c1.connect();
      r1.awaitConnects(1, 10_000);
      c2.connect();
      r2.awaitConnects(1, 10_000);
      r1.await("replaced", 10_000, () -> r1.replaced == 1);
      r1.await("disconnected", 10_000, () -> r1.disconnects == 1);
      assertFalse(c1.isConnected());
      admin.publish(uid, "op", "to the newer one");
      r2.awaitMessages(1, 10_000);
      assertEquals(1, r1.connects(), "the replaced client does not fight back");
      assertTrue(c2.isConnected());
      assertEquals(0, r1.messages().size());
    }
  }

  @ParameterizedTest
  @EnumSource(
      value = Transport.class,
      names = {"WEBSOCKET", "CHUNKED"})
  void heartbeatsAreSent(Transport t) throws Exception {
    Recorder r = new Recorder();
    try (Client c = client("hb-" + t, fast().transport(t).heartbeatIntervalMs(500).build(), r)) {
      long before = heartbeatsCounted();
      c.connect();
      r.awaitConnects(1, 10_000);
      long deadline = System.currentTimeMillis() + 10_000;
      long hb = 0;
      while (System.currentTimeMillis() < deadline) {
        hb = heartbeatsCounted() - before;
        if (hb >= 3) {
          break;
        }
        Thread.sleep(50);
      }
      assertTrue(hb >= 3, "server counted " + hb + " heartbeats");
      assertTrue(c.isConnected(), "the answered heartbeats keep the stream alive");
      assertEquals(1, r.connects(), r.events.toString());
    }
  }

  static long heartbeatsCounted() throws Exception {
    @SuppressWarnings("unchecked")
    Map<String, Object> rt = (Map<String, Object>) admin.stats().get("recv_type");
    return (Long) rt.get("hb");
  }

  @Test
  void badCredentialsAreAnError() throws Exception {
    Recorder r = new Recorder();
    try (Client c = new Client(server.clientUrl(), "a b", "pw", fast().build(), r)) {
      c.connect();
      r.await("an error", 10_000, () -> !r.errors.isEmpty());
      Throwable e = r.errors.get(0);
      assertTrue(e instanceof ServerErrorException, e.toString());
      assertEquals(400, ((ServerErrorException) e).status());
      assertEquals("invalid uid", ((ServerErrorException) e).reason());
      assertEquals(0, r.connects());
    }
  }

  @Test
  void sendWithoutStreamFails() {
    Client c = client("idle", fast().build(), new Recorder());
    try {
      assertThrows(java.io.IOException.class, () -> c.sendToUser("x", "y"));
    } finally {
      c.close();
    }
  }
}
