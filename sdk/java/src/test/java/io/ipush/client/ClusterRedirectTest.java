package io.ipush.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * A 2-node static cluster: connecting to n1 for a uid of n2 follows the 303 to n2; a stream told to
 * move goes to the location at once and resumes.
 */
class ClusterRedirectTest {
  static List<TestServer> nodes = new ArrayList<>();

  @BeforeAll
  static void start() throws Exception {
    nodes = TestServer.cluster(2);
  }

  @AfterAll
  static void stop() {
    for (TestServer s : nodes) {
      s.close();
    }
  }

  /** A uid (prefix + a number) that n2 owns, as n1 says. */
  static String uidOfN2(String prefix) throws Exception {
    String n2Addr = "127.0.0.1:" + nodes.get(1).clientPort;
    for (int i = 0; i < 200; i++) {
      if (nodes.get(0).admin().shard(prefix + i).equals(n2Addr)) {
        return prefix + i;
      }
    }
    return fail("no uid of n2 in 200 tries");
  }

  @ParameterizedTest
  @EnumSource(Transport.class)
  void followsSeeOtherToTheOwner(Transport t) throws Exception {
    TestServer n1 = nodes.get(0);
    TestServer n2 = nodes.get(1);
    AdminClient a1 = n1.admin();
    String uid = uidOfN2("owned-" + t.name().toLowerCase() + "-");
    Recorder r = new Recorder();
    ClientOptions o = ClientOptions.builder().transport(t).backoff(100, 1000).build();
    try (Client c = new Client(n1.clientUrl(), uid, "pw", o, r)) {
      c.connect();
      r.awaitConnects(1, 10_000);
      assertEquals(n2.clientUrl(), r.nodes.get(0), "connected to the owner");
      // Published through n1's admin: routed over the bus to n2, then to the stream.
      a1.publish(uid, "op", "via n1");
      r.awaitMessages(1, 10_000);
      assertEquals("via n1", r.messages().get(0).body());
      // Sending works on the redirected stream (over SSE: POST /send to n2).
      c.sendToUser(uid, "self");
      r.awaitMessages(2, 10_000);
      assertEquals(Long.valueOf(2), r.messages().get(1).seq());
    }
  }

  /**
   * Asked through n1, n2 tells the stream to move to n1, which sends it back to n2 (the owner): the
   * client goes to the location at once (its backoff is a minute) and resumes from its last ack,
   * nothing lost and nothing twice.
   */
  @ParameterizedTest
  @CsvSource({"WEBSOCKET,JSON", "WEBSOCKET,MSGPACK", "SSE,JSON", "CHUNKED,MSGPACK"})
  void movedReconnectsToTheLocationAndResumesOnce(Transport t, Codec codec) throws Exception {
    TestServer n1 = nodes.get(0);
    TestServer n2 = nodes.get(1);
    AdminClient a1 = n1.admin();
    String uid =
        uidOfN2("mover-" + t.name().toLowerCase() + "-" + codec.name().toLowerCase() + "-");
    Recorder r = new Recorder();
    ClientOptions o =
        ClientOptions.builder().transport(t).codec(codec).backoff(60_000, 60_000).build();
    try (Client c = new Client(n1.clientUrl(), uid, "pw", o, r)) {
      c.connect();
      r.awaitConnects(1, 10_000);
      a1.publish(uid, "op", "before the move");
      r.awaitMessages(1, 10_000);
      a1.move(uid, n1.clientUrl());
      a1.publish(uid, "op", "after the move");
      r.awaitConnects(2, 10_000);
      a1.publish(uid, "op", "live again");
      r.awaitMessages(3, 10_000);
      assertEquals(List.of("before the move", "after the move", "live again"), r.bodies());
      assertEquals(List.of(1L, 2L, 3L), r.seqs());
      synchronized (r) {
        assertEquals(List.of(n1.clientUrl() + "/connect?uid=" + uid), r.moves, r.events.toString());
        assertEquals(n2.clientUrl(), r.nodes.get(1), "back on the owner");
      }
    }
  }
}
