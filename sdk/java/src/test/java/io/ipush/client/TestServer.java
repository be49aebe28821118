package io.ipush.client;

import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Assumptions;

/**
 * A real ipush_server for a test: free ports, its own data dir, killed at the end (and by a
 * shutdown hook if the JVM dies first). The binary is $IPUSH_SERVER, else {@code
 * <repo>/target/debug/ipush_server}.
 */
final class TestServer implements AutoCloseable {
  private static final Set<Process> LIVE = ConcurrentHashMap.newKeySet();

  static {
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  for (Process p : LIVE) {
                    p.destroyForcibly();
                  }
                }));
  }

  final int clientPort;
  final int adminPort;
  final int busPort;
  final Path dataDir;
  final Path log;
  private final List<String> args;
  private final boolean ownDir;
  private Process process;

  private TestServer(
      int clientPort, int adminPort, int busPort, Path dataDir, boolean ownDir, List<String> args) {
    this.clientPort = clientPort;
    this.adminPort = adminPort;
    this.busPort = busPort;
    this.dataDir = dataDir;
    this.ownDir = ownDir;
    this.log = dataDir.resolveSibling(dataDir.getFileName() + ".log");
    this.args = args;
  }

  /** The repository root: two levels above the Maven project (sdk/java). */
  static Path repoRoot() {
    String basedir = System.getProperty("basedir", System.getProperty("user.dir"));
    return Paths.get(basedir).toAbsolutePath().getParent().getParent();
  }

  static Path binary() {
    String env = System.getenv("IPUSH_SERVER");
    if (env != null && !env.isEmpty()) {
      return Paths.get(env);
    }
    return repoRoot().resolve("target/debug/ipush_server");
  }

  static boolean inCi() {
    String ci = System.getenv("CI");
    return ci != null && !ci.isEmpty() && !ci.equals("false") && !ci.equals("0");
  }

  /** Fails in CI, skips (saying "skipped") elsewhere, when the server binary is missing. */
  static void requireBinary() {
    Path b = binary();
    if (Files.isExecutable(b)) {
      return;
    }
    String msg = "ipush_server not found at " + b + " (set IPUSH_SERVER or run cargo build)";
    if (inCi()) {
      fail(msg);
    }
    System.out.println("skipped: " + msg);
    Assumptions.abort("skipped: " + msg);
  }

  /**
   * Free ports below the kernel's ephemeral range (so no outgoing connection of any process, nor a
   * client's self-connect, takes one while a server restarts on it), checked by binding.
   */
  static int[] freePorts(int n) throws IOException {
    int low = 32768;
    try {
      String r =
          new String(
              Files.readAllBytes(Paths.get("/proc/sys/net/ipv4/ip_local_port_range")),
              StandardCharsets.US_ASCII);
      low = Integer.parseInt(r.trim().split("\\s+")[0]);
    } catch (IOException | RuntimeException e) {
      // not Linux: keep the usual default
    }
    int from = Math.max(1025, Math.min(20000, low - 4000));
    int span = Math.max(1000, low - from);
    java.util.Random rnd = new java.util.Random();
    List<ServerSocket> held = new ArrayList<>();
    int[] ports = new int[n];
    try {
      for (int i = 0; i < n; i++) {
        for (int tries = 0; ; tries++) {
          int p = from + rnd.nextInt(span);
          ServerSocket s = new ServerSocket();
          try {
            s.bind(new InetSocketAddress("127.0.0.1", p));
            held.add(s);
            ports[i] = p;
            break;
          } catch (IOException taken) {
            s.close();
            if (tries > 200) {
              throw taken;
            }
          }
        }
      }
    } finally {
      for (ServerSocket s : held) {
        s.close();
      }
    }
    return ports;
  }

  /** One node: {@code extra} flags are added (e.g. --storage=embedded). */
  static TestServer start(String... extra) throws Exception {
    requireBinary();
    Exception last = null;
    for (int tryNo = 0; tryNo < 4; tryNo++) {
      int[] p = freePorts(3);
      Path dir = Files.createTempDirectory("ipush-java-");
      List<String> a = new ArrayList<>(Arrays.asList(extra));
      TestServer s = new TestServer(p[0], p[1], p[2], dir.resolve("data"), true, a);
      try {
        s.launch();
        return s;
      } catch (Exception e) {
        last = e;
        s.close();
      }
    }
    throw last;
  }

  /** A static cluster of {@code n} nodes on 127.0.0.1, each with its own data dir. */
  static List<TestServer> cluster(int n, String... extra) throws Exception {
    requireBinary();
    Exception last = null;
    for (int tryNo = 0; tryNo < 4; tryNo++) {
      int[] p = freePorts(3 * n);
      StringBuilder nodes = new StringBuilder();
      for (int i = 0; i < n; i++) {
        if (i > 0) {
          nodes.append(',');
        }
        nodes
            .append('n')
            .append(i + 1)
            .append("=127.0.0.1:")
            .append(p[3 * i])
            .append(':')
            .append(p[3 * i + 1])
            .append(':')
            .append(p[3 * i + 2]);
      }
      List<TestServer> out = new ArrayList<>();
      try {
        for (int i = 0; i < n; i++) {
          Path dir = Files.createTempDirectory("ipush-java-n" + (i + 1) + "-");
          List<String> a = new ArrayList<>(Arrays.asList(extra));
          a.add("--node=n" + (i + 1));
          a.add("--nodes=" + nodes);
          TestServer s =
              new TestServer(p[3 * i], p[3 * i + 1], p[3 * i + 2], dir.resolve("data"), true, a);
          out.add(s);
          s.launch();
        }
        for (TestServer s : out) {
          s.awaitPeersUp(n - 1);
        }
        return out;
      } catch (Exception e) {
        last = e;
        for (TestServer s : out) {
          s.close();
        }
      }
    }
    throw last;
  }

  private void launch() throws Exception {
    Files.createDirectories(dataDir);
    List<String> cmd = new ArrayList<>();
    cmd.add(binary().toString());
    cmd.add("--client_host=127.0.0.1");
    cmd.add("--admin_host=127.0.0.1");
    cmd.add("--client_port=" + clientPort);
    cmd.add("--admin_port=" + adminPort);
    cmd.add("--bus_port=" + busPort);
    cmd.add("--cores=2");
    cmd.add("--data_dir=" + dataDir);
    cmd.add("--pid_file=");
    cmd.add("--log_level=warn");
    boolean hasStorage = false;
    for (String a : args) {
      hasStorage |= a.startsWith("--storage=");
    }
    if (!hasStorage) {
      cmd.add("--storage=memory");
    }
    cmd.addAll(args);
    ProcessBuilder pb = new ProcessBuilder(cmd);
    pb.redirectErrorStream(true);
    pb.redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile()));
    pb.directory(dataDir.getParent().toFile());
    process = pb.start();
    LIVE.add(process);
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
    AdminClient admin = new AdminClient(adminUrl(), null, 1000);
    while (true) {
      if (!process.isAlive()) {
        throw new IOException("ipush_server exited at start: " + logTail());
      }
      try {
        admin.health();
        if (clientPortOpen()) {
          long ms = (System.nanoTime() - (deadline - TimeUnit.SECONDS.toNanos(20))) / 1_000_000;
          if (ms > 2000) {
            System.out.println("ipush_server took " + ms + " ms to start");
          }
          return;
        }
      } catch (IOException notYet) {
        // not listening yet
      }
      if (System.nanoTime() > deadline) {
        throw new IOException("ipush_server not ready in 20 s: " + logTail());
      }
      Thread.sleep(50);
    }
  }

  /** Waits until /health lists {@code n} peers, all "up" (the bus is connected). */
  void awaitPeersUp(int n) throws Exception {
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
    AdminClient admin = new AdminClient(adminUrl(), null, 1000);
    while (true) {
      Object peers = admin.health().get("peers");
      if (peers instanceof java.util.Map) {
        java.util.Map<?, ?> m = (java.util.Map<?, ?>) peers;
        long up = m.values().stream().filter("up"::equals).count();
        if (m.size() == n && up == n) {
          return;
        }
      }
      if (System.nanoTime() > deadline) {
        throw new IOException("cluster peers not up in 20 s: " + admin.health());
      }
      Thread.sleep(50);
    }
  }

  private boolean clientPortOpen() {
    try (java.net.Socket s = new java.net.Socket()) {
      s.connect(new InetSocketAddress("127.0.0.1", clientPort), 500);
      return true;
    } catch (IOException e) {
      return false;
    }
  }

  String logTail() {
    try {
      List<String> lines = Files.readAllLines(log, StandardCharsets.UTF_8);
      return String.join("\n", lines.subList(Math.max(0, lines.size() - 20), lines.size()));
    } catch (IOException e) {
      return "(no log)";
    }
  }

  String clientUrl() {
    return "http://127.0.0.1:" + clientPort;
  }

  String adminUrl() {
    return "http://127.0.0.1:" + adminPort;
  }

  AdminClient admin() {
    return new AdminClient(adminUrl());
  }

  /** SIGTERM and wait for the exit (graceful stop); SIGKILL after 10 s. */
  void stop() {
    Process p = process;
    if (p == null) {
      return;
    }
    long t0 = System.nanoTime();
    p.destroy();
    try {
      if (!p.waitFor(10, TimeUnit.SECONDS)) {
        System.out.println("ipush_server did not stop in 10 s after SIGTERM: killed");
        p.destroyForcibly();
        p.waitFor(5, TimeUnit.SECONDS);
      }
      long ms = (System.nanoTime() - t0) / 1_000_000;
      if (ms > 2000) {
        System.out.println("ipush_server took " + ms + " ms to stop");
      }
    } catch (InterruptedException e) {
      p.destroyForcibly();
      Thread.currentThread().interrupt();
    }
    LIVE.remove(p);
    process = null;
  }

  /** Starts again on the same ports and data dir (the server retries a port still held). */
  void restart() throws Exception {
    stop();
    // The same ports: a moment's conflict (another test's stray connect) is retried.
    for (int tryNo = 0; ; tryNo++) {
      try {
        launch();
        return;
      } catch (IOException e) {
        if (tryNo >= 10) {
          throw e;
        }
        stop();
        Thread.sleep(300);
      }
    }
  }

  @Override
  public void close() {
    stop();
    if (ownDir) {
      deleteTree(dataDir.getParent());
    }
  }

  private static void deleteTree(Path p) {
    if (p == null || !Files.exists(p)) {
      return;
    }
    try (Stream<Path> s = Files.walk(p)) {
      List<Path> all = new ArrayList<>();
      s.forEach(all::add);
      Collections.sort(all, Comparator.reverseOrder());
      for (Path x : all) {
        Files.deleteIfExists(x);
      }
    } catch (IOException ignored) {
      // temp files: best effort
    }
  }
}
