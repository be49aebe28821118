package io.ipush.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** A 2-node static cluster: connecting to n1 for a uid of n2 follows the 303 to n2. */
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

  @ParameterizedTest
  @EnumSource(Transport.class)
  void followsSeeOtherToTheOwner(Transport t) throws Exception {
    TestServer n1 = nodes.get(0);
    TestServer n2 = nodes.get(1);
    AdminClient a1 = n1.admin();
    String n2Addr = "127.0.0.1:" + n2.clientPort;
    String uid = null;
    for (int i = 0; i < 200 && uid == null; i++) {
      String u = "owned-" + t.name().toLowerCase() + "-" + i;
      if (a1.shard(u).equals(n2Addr)) {
        uid = u;
      }
    }
    assertNotNull(uid, "no uid of n2 in 200 tries");
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
}
