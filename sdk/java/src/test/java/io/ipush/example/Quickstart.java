package io.ipush.example;

import io.ipush.client.AdminClient;
import io.ipush.client.Client;
import io.ipush.client.ClientListener;
import io.ipush.client.ClientOptions;
import io.ipush.client.Message;
import io.ipush.client.Transport;
import java.util.concurrent.CountDownLatch;

/** The README's example (compiled with the tests so it cannot rot). */
public final class Quickstart {
  public static void main(String[] args) throws Exception {
    CountDownLatch got = new CountDownLatch(1);
    ClientListener listener =
        new ClientListener() {
          @Override
          public void onConnected(Client c, Transport t, String node) {
            System.out.println("connected over " + t + " to " + node);
          }

          @Override
          public void onMessage(Client c, Message m) {
            System.out.println("seq " + m.seq() + " from " + m.from() + ": " + m.body());
            got.countDown();
          }

          @Override
          public void onError(Client c, Throwable e) {
            System.err.println("error (reconnecting): " + e);
          }
        };
    ClientOptions options = ClientOptions.builder().autoAck(1000, 64).build();
    try (Client client =
        new Client("http://127.0.0.1:9000", "user001", "pwd001", options, listener)) {
      client.connect();
      AdminClient admin = new AdminClient("http://127.0.0.1:9001");
      admin.publish("user001", "op", "hello");
      got.await();
      client.subscribe("channel1");
      client.sendToChannel("channel1", "hi all");
    }
  }
}
