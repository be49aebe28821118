package io.ipush.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * Resume after the server restarts (SIGTERM, durable embedded store): the application sees every
 * message exactly once, in seq order — the ones delivered before the stop (replayed again because
 * they were not acked, then dropped as duplicates), those published after the restart while the
 * client was still away, and live ones.
 */
class ResumeTest {
  @ParameterizedTest
  @EnumSource(Transport.class)
  void resumeAfterRestart(Transport t) throws Exception {
    try (TestServer server = TestServer.start("--storage=embedded")) {
      AdminClient admin = server.admin();
      String uid = "resume-" + t.name().toLowerCase();
      Recorder r = new Recorder();
      // Manual acks: nothing is acked, so the server replays 1..3 after the restart and the
      // client must drop them.
      ClientOptions o = ClientOptions.builder().transport(t).manualAck().backoff(200, 1000).build();
      try (Client c = new Client(server.clientUrl(), uid, "pw", o, r)) {
        c.connect();
        r.awaitConnects(1, 10_000);
        for (int i = 1; i <= 3; i++) {
          admin.publish(uid, "op", "before " + i);
        }
        r.awaitMessages(3, 10_000);

        server.stop();
        r.await("disconnect", 10_000, () -> r.disconnects >= 1);
        server.restart();
        boolean awayWhilePublishing = !c.isConnected();
        for (int i = 4; i <= 6; i++) {
          admin.publish(uid, "op", "while away " + i);
        }
        r.awaitConnects(2, 15_000);
        r.awaitMessages(6, 10_000);
        for (int i = 7; i <= 9; i++) {
          admin.publish(uid, "op", "live " + i);
        }
        r.awaitMessages(9, 10_000);
        // Nothing more arrives (no late duplicate).
        c.sendToUser(uid, "marker");
        r.awaitMessages(10, 10_000);

        List<Long> want = new ArrayList<>();
        for (long s = 1; s <= 10; s++) {
          want.add(s);
        }
        assertEquals(want, r.seqs(), "every message once, in seq order; events " + r.events);
        assertEquals("before 1", r.messages().get(0).body());
        assertEquals("while away 4", r.messages().get(3).body());
        assertEquals("live 9", r.messages().get(8).body());
        assertTrue(r.connects() >= 2);
        System.out.println(
            "resume "
                + t
                + ": published 4..6 while the client was "
                + (awayWhilePublishing ? "disconnected" : "already back"));
      }
    }
  }
}
