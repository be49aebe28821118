package io.ipush.client;

import static org.junit.jupiter.api.Assertions.fail;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.function.BooleanSupplier;

/** A listener that records every event, with bounded waits for tests. */
final class Recorder implements ClientListener {
  // Synchronized lists: tests read them (toString in an assertion message, get) while the
  // client's thread may still be adding to them.
  final List<Message> messages = Collections.synchronizedList(new ArrayList<>());
  final List<String> events = Collections.synchronizedList(new ArrayList<>());
  final List<Throwable> errors = Collections.synchronizedList(new ArrayList<>());
  final List<String> nodes = Collections.synchronizedList(new ArrayList<>());
  final List<Transport> transports = Collections.synchronizedList(new ArrayList<>());
  final List<String> moves = Collections.synchronizedList(new ArrayList<>());
  int connects;
  int disconnects;
  int replaced;

  @Override
  public synchronized void onMessage(Client c, Message m) {
    messages.add(m);
    notifyAll();
  }

  @Override
  public synchronized void onConnected(Client c, Transport t, String nodeUrl) {
    connects++;
    nodes.add(nodeUrl);
    transports.add(t);
    events.add("connected " + t + " " + nodeUrl);
    notifyAll();
  }

  @Override
  public synchronized void onDisconnected(Client c, String reason) {
    disconnects++;
    events.add("disconnected " + reason);
    notifyAll();
  }

  @Override
  public synchronized void onError(Client c, Throwable e) {
    errors.add(e);
    events.add("error " + e);
    notifyAll();
  }

  @Override
  public synchronized void onMoved(Client c, String location) {
    moves.add(location);
    events.add("moved " + location);
    notifyAll();
  }

  @Override
  public synchronized void onReplaced(Client c) {
    replaced++;
    events.add("replaced");
    notifyAll();
  }

  synchronized List<Message> messages() {
    return new ArrayList<>(messages);
  }

  synchronized List<Long> seqs() {
    List<Long> s = new ArrayList<>();
    for (Message m : messages) {
      s.add(m.seq());
    }
    return s;
  }

  synchronized List<String> bodies() {
    List<String> s = new ArrayList<>();
    for (Message m : messages) {
      s.add(m.body());
    }
    return s;
  }

  synchronized int connects() {
    return connects;
  }

  synchronized int errorCount() {
    return errors.size();
  }

  /** Waits (at most {@code ms}) until {@code cond} holds, else fails with the event log. */
  synchronized void await(String what, long ms, BooleanSupplier cond) {
    long deadline = System.currentTimeMillis() + ms;
    while (!cond.getAsBoolean()) {
      long left = deadline - System.currentTimeMillis();
      if (left <= 0) {
        fail("timed out waiting for " + what + "; events: " + events + "; messages: " + messages);
      }
      try {
        wait(Math.min(left, 100));
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        fail("interrupted");
      }
    }
  }

  void awaitMessages(int n, long ms) {
    await(n + " messages", ms, () -> messages.size() >= n);
  }

  void awaitConnects(int n, long ms) {
    await(n + " connects", ms, () -> connects >= n);
  }
}
