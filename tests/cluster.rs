//! Three real nodes, each on a loopback address of its own: ownership, redirects, routing of
//! admin requests and client messages over the NNG bus, channel broadcast, failure and healing.
mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Node {
    name: String,
    ip: String,
    client: u16,
    admin: u16,
    bus: u16,
    child: Option<Child>,
}

struct Cluster {
    nodes: Vec<Node>,
    spec: String,
    dir: std::path::PathBuf,
    /// Flags every node gets after the defaults (e.g. --storage=scylla ...).
    extra: Vec<String>,
    _serial: std::sync::MutexGuard<'static, ()>,
}

/// Clusters of this file run one at a time: three servers each are plenty for two cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Ports every node uses, each node on an address of its own. A static cluster names its
/// nodes' ports before any starts, so they cannot be port 0; an address block per cluster
/// (127.X.Y.node, X from the process, Y counting clusters) keeps them apart.
const CLIENT_PORT: u16 = 19000;
const ADMIN_PORT: u16 = 19001;
const BUS_PORT: u16 = 19002;

/// The loopback network of the next cluster of this process.
fn next_network() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let y = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 250 + 1;
    format!("127.{}.{y}", 10 + std::process::id() % 200)
}

impl Cluster {
    fn start(n: usize) -> Cluster {
        Self::start_with(n, &[])
    }

    fn start_with(n: usize, extra: &[String]) -> Cluster {
        let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let net = next_network();
        let nodes: Vec<Node> = (0..n)
            .map(|i| Node {
                name: format!("n{}", i + 1),
                ip: format!("{net}.{}", i + 1),
                client: CLIENT_PORT,
                admin: ADMIN_PORT,
                bus: BUS_PORT,
                child: None,
            })
            .collect();
        let spec = nodes
            .iter()
            .map(|n| format!("{}={}:{}:{}:{}", n.name, n.ip, n.client, n.admin, n.bus))
            .collect::<Vec<_>>()
            .join(",");
        let dir = std::env::temp_dir().join(unique("cluster"));
        let mut c = Cluster {
            nodes,
            spec,
            dir,
            extra: extra.to_vec(),
            _serial: guard,
        };
        for i in 0..n {
            c.launch(i);
        }
        for i in 0..n {
            c.wait_healthy(i);
        }
        c.wait_all_peers_up();
        c
    }

    fn launch(&mut self, i: usize) {
        let n = &self.nodes[i];
        let child = Command::new(env!("CARGO_BIN_EXE_ipush_server"))
            .args([
                format!("--node={}", n.name),
                format!("--nodes={}", self.spec),
                format!("--client_host={}", n.ip),
                format!("--admin_host={}", n.ip),
                format!(
                    "--pid_file={}",
                    self.dir.join(format!("{}.pid", n.name)).display()
                ),
                format!("--data_dir={}", self.dir.join(&n.name).display()),
                "--storage=memory".into(),
                "--cores=1".into(),
                "--log_level=warn".into(),
            ])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        std::fs::create_dir_all(&self.dir).unwrap();
        self.nodes[i].child = Some(child);
    }

    fn wait_healthy(&self, i: usize) {
        wait_until(Duration::from_secs(40), "node healthy", || {
            matches!(self.try_get(i, "/health"), Ok((200, _)))
        });
    }

    fn wait_all_peers_up(&self) {
        wait_until(
            Duration::from_secs(15),
            "every peer up on every node",
            || {
                (0..self.nodes.len()).all(|i| {
                self.nodes[i].child.is_none()
                    || matches!(self.try_get(i, "/health"), Ok((200, v)) if v["result"]["peers"]
                        .as_object()
                        .is_some_and(|p| p.iter().all(|(name, st)| {
                            st == "up" || self.nodes.iter().any(|n| &n.name == name && n.child.is_none())
                        })))
            })
            },
        );
    }

    fn try_get(&self, i: usize, path: &str) -> std::io::Result<(u16, Value)> {
        self.request(i, "GET", path, "")
    }

    fn request(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: &str,
    ) -> std::io::Result<(u16, Value)> {
        let n = &self.nodes[i];
        let mut s = TcpStream::connect((n.ip.as_str(), n.admin))?;
        s.set_read_timeout(Some(Duration::from_secs(15)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        let (st, b) = parse_response(&out);
        Ok((st, serde_json::from_str(&b).unwrap_or(Value::String(b))))
    }

    fn get(&self, i: usize, path: &str) -> (u16, Value) {
        self.try_get(i, path).unwrap()
    }

    fn post(&self, i: usize, path: &str, body: &str) -> (u16, Value) {
        self.request(i, "POST", path, body).unwrap()
    }

    /// Index of the node that owns `uid`, asked of node 0.
    fn owner(&self, uid: &str) -> usize {
        let (_, v) = self.get(0, &format!("/shard?uid={uid}"));
        let addr = v["result"].as_str().unwrap().to_string();
        self.nodes
            .iter()
            .position(|n| format!("{}:{}", n.ip, n.client) == addr)
            .unwrap()
    }

    /// A uid owned by node `i`.
    fn uid_on(&self, i: usize, prefix: &str) -> String {
        (0..1000)
            .map(|k| format!("{prefix}{k}"))
            .find(|u| self.owner(u) == i)
            .unwrap()
    }

    fn connect(&self, uid: &str) -> Client {
        let i = self.owner(uid);
        let n = &self.nodes[i];
        let c = Client::connect(&format!("{}:{}", n.ip, n.client), uid, "pw").unwrap();
        assert_eq!(c.status, 200, "{}", c.head);
        c
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn ownership_agrees_spreads_and_redirects() {
    let c = Cluster::start(3);
    let mut per_node = [0usize; 3];
    for k in 0..150 {
        let uid = format!("user{k}");
        let answers: Vec<Value> = (0..3)
            .map(|i| c.get(i, &format!("/shard?uid={uid}")).1)
            .collect();
        assert!(
            answers.iter().all(|a| a == &answers[0]),
            "{uid}: {answers:?}"
        );
        per_node[c.owner(&uid)] += 1;
    }
    assert!(
        per_node.iter().all(|&n| n >= 25),
        "users spread over all nodes: {per_node:?}"
    );
    // A connect on the wrong node is sent to the owner, with the same query.
    let uid = c.uid_on(1, "r");
    let n0 = &c.nodes[0];
    let r = Client::connect(&format!("{}:{}", n0.ip, n0.client), &uid, "pw").unwrap();
    assert_eq!(r.status, 303, "{}", r.head);
    let n1 = &c.nodes[1];
    let want = format!(
        "Location: http://{}:{}/connect?uid={uid}&password=pw\r\n",
        n1.ip, n1.client
    );
    assert!(r.head.contains(&want), "{}", r.head);
    assert_eq!(c.get(0, "/stats").1["result"]["redirect_number"], 1);
}

#[test]
fn admin_requests_and_client_messages_cross_nodes() {
    admin_requests_and_client_messages_cross(Cluster::start(3));
}

/// The same with every node on one Cassandra / ScyllaDB keyspace (IPUSH_TEST_SCYLLA).
#[test]
fn scylla_admin_requests_and_client_messages_cross_nodes() {
    let Some(ks) = TestKeyspace::new("scylla_admin_requests_and_client_messages_cross_nodes")
    else {
        return;
    };
    ks.create();
    admin_requests_and_client_messages_cross(Cluster::start_with(3, &ks.flags()));
}

fn admin_requests_and_client_messages_cross(c: Cluster) {
    let a = c.uid_on(0, "a");
    let b = c.uid_on(1, "b");
    let off = c.uid_on(2, "off");
    // Publish through a node that does not own the user.
    let (st, v) = c.post(0, &format!("/pub?to={off}&from=op"), "via n1");
    assert_eq!((st, v), (200, json!({"result":"ok"})));
    let (st, v) = c.get(1, &format!("/msg?uid={off}"));
    assert_eq!(st, 200);
    let list = v["result"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert!(list[0].as_str().unwrap().contains("\"b\":\"via n1\""));
    // Client to client across nodes.
    let mut ca = c.connect(&a);
    let mut cb = c.connect(&b);
    ca.send(&format!(r#"{{"y":3,"t":"{b}","b":"hello from n1"}}"#));
    let m = cb.recv();
    assert_eq!(
        (m["f"].as_str(), m["b"].as_str(), m["s"].as_u64()),
        (Some(a.as_str()), Some("hello from n1"), Some(1))
    );
    // Subscribe and disconnect through a non-owner.
    assert_eq!(c.get(2, &format!("/sub?uid={b}&cid=x")).0, 200);
    assert_eq!(c.post(2, &format!("/disconnect?uid={b}"), "").0, 200);
    assert!(cb.ends_within(Duration::from_secs(5)));
}

#[test]
fn channel_members_on_every_node_get_each_message_once() {
    channel_members_get_each_message_once(Cluster::start(3));
}

/// Three nodes, one keyspace: each core reads only its own members of the channel (before
/// the member partitions named the node, every node's core 0 read all of them).
#[test]
fn scylla_channel_members_on_every_node_get_each_message_once() {
    let Some(ks) = TestKeyspace::new("scylla_channel_members_on_every_node") else {
        return;
    };
    ks.create();
    channel_members_get_each_message_once(Cluster::start_with(3, &ks.flags()));
}

fn channel_members_get_each_message_once(c: Cluster) {
    let members: Vec<String> = (0..3).map(|i| c.uid_on(i, &format!("m{i}-"))).collect();
    let mut clients: Vec<Client> = members.iter().map(|u| c.connect(u)).collect();
    for (i, u) in members.iter().enumerate() {
        // Subscribe through different nodes, by admin and by client message.
        if i == 0 {
            clients[0].send(r#"{"y":1,"c":"everywhere"}"#);
        } else {
            assert_eq!(
                c.get((i + 1) % 3, &format!("/sub?uid={u}&cid=everywhere"))
                    .0,
                200
            );
        }
    }
    wait_until(Duration::from_secs(5), "client subscribe stored", || {
        c.get(0, "/stats").1["result"]["recv_type"]["sub"] == 1
    });
    // One message published by admin on node 3, one sent by a client on node 2.
    assert_eq!(c.post(2, "/pub?channel=everywhere&from=op", "one").0, 200);
    clients[1].send(r#"{"y":4,"c":"everywhere","b":"two"}"#);
    for cl in clients.iter_mut() {
        let m1 = cl.recv();
        let m2 = cl.recv();
        let mut got = [
            (
                m1["b"].as_str().unwrap().to_string(),
                m1["s"].as_u64().unwrap(),
            ),
            (
                m2["b"].as_str().unwrap().to_string(),
                m2["s"].as_u64().unwrap(),
            ),
        ];
        got.sort();
        assert_eq!(
            got.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
            ["one", "two"]
        );
        let mut seqs: Vec<u64> = got.iter().map(|g| g.1).collect();
        seqs.sort();
        assert_eq!(seqs, [1, 2], "per-member seqs");
        // Exactly once: nothing else arrives.
        cl.send(r#"{"y":0}"#);
        assert_eq!(cl.recv(), json!({"y":0}));
    }
    // And stored once per member and message, by its owner only (3 members x 2 messages). The
    // client's message was cast (no answer), and a member gets a message before its write is
    // done, so the count may still be rising: wait (bounded) for it, then it must be exact.
    let stored = || -> f64 {
        (0..3)
            .map(|i| {
                let (_, body) = c.get(i, "/metrics");
                let body = body.as_str().unwrap_or_default().to_string();
                body.lines()
                    .filter(|l| l.starts_with("ipush_stored{"))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum::<f64>()
            })
            .sum()
    };
    wait_until(Duration::from_secs(10), "6 deliveries persisted", || {
        stored() >= 6.0
    });
    assert_eq!(stored(), 6.0, "deliveries persisted over all nodes");
}

#[test]
fn a_dead_node_gives_503_for_its_users_and_heals() {
    a_dead_node_gives_503_and_heals(Cluster::start(3));
}

#[test]
fn scylla_a_dead_node_gives_503_for_its_users_and_heals() {
    let Some(ks) = TestKeyspace::new("scylla_a_dead_node_gives_503") else {
        return;
    };
    ks.create();
    a_dead_node_gives_503_and_heals(Cluster::start_with(3, &ks.flags()));
}

fn a_dead_node_gives_503_and_heals(mut c: Cluster) {
    let on1 = c.uid_on(1, "d");
    let on2 = c.uid_on(2, "e");
    c.kill(1);
    let t = Instant::now();
    let (st, v) = c.post(0, &format!("/pub?to={on1}&from=op"), "lost?");
    assert_eq!((st, v), (503, json!({"error":"node n2 unavailable"})));
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "503 came after {:?}",
        t.elapsed()
    );
    // The others keep working.
    assert_eq!(c.post(0, &format!("/pub?to={on2}&from=op"), "fine").0, 200);
    let (st, v) = c.post(0, "/pub?channel=any&from=op", "x");
    assert_eq!(
        (st, v["error"].as_str()),
        (503, Some("node n2 unavailable"))
    );
    let (_, metrics) = {
        let n = &c.nodes[0];
        let mut s = TcpStream::connect((n.ip.as_str(), n.admin)).unwrap();
        write!(s, "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        parse_response(&out)
    };
    assert!(
        metrics.contains("ipush_peer_up{peer=\"n2\"} 0"),
        "{metrics}"
    );
    // Restart: the cluster heals by itself.
    c.launch(1);
    c.wait_healthy(1);
    wait_until(
        Duration::from_secs(15),
        "publish to n2's user works again",
        || c.post(0, &format!("/pub?to={on1}&from=op"), "back").0 == 200,
    );
}

/// `/pub/batch` on one node: the lines of other nodes' users go to each node in one bus
/// request, each user's lines keep their order, and a dead node's lines answer 503 alone.
#[test]
fn a_batch_reaches_users_on_every_node_in_order() {
    let mut c = Cluster::start(3);
    let users: Vec<String> = (0..3)
        .flat_map(|i| ["ba", "bb"].map(|p| (i, p)))
        .map(|(i, p)| c.uid_on(i, p))
        .collect();
    let line = |u: &str, b: &str| format!("{}\n", json!({"to": u, "from": "op", "b": b}));
    let mut body: String = (0..60)
        .map(|k| line(&users[k % 6], &format!("n{}", k / 6)))
        .collect();
    body.push_str("{\"to\":\"\",\"from\":\"op\",\"b\":\"x\"}\n");
    let answers = |v: Value| -> Vec<Value> {
        let text = v.as_str().expect("an NDJSON body").to_string();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (st, v) = c.post(0, "/pub/batch", &body);
    assert_eq!(st, 200);
    let lines = answers(v);
    assert_eq!(lines.len(), 61);
    assert!(
        lines[..60]
            .iter()
            .all(|l| *l == json!({"result":"ok","status":200})),
        "{lines:?}"
    );
    assert_eq!(lines[60], json!({"error":"invalid to","status":400}));
    for u in &users {
        let (_, v) = c.get(1, &format!("/msg?uid={u}"));
        let got: Vec<(u64, String)> = v["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let m: Value = serde_json::from_str(m.as_str().unwrap()).unwrap();
                (
                    m["s"].as_u64().unwrap(),
                    m["b"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let want: Vec<(u64, String)> = (0..10).map(|k| (k + 1, format!("n{k}"))).collect();
        assert_eq!(got, want, "{u}");
    }
    c.kill(2);
    let body: String = users.iter().map(|u| line(u, "after")).collect();
    let (st, v) = c.post(0, "/pub/batch", &body);
    assert_eq!(st, 200);
    let lines = answers(v);
    for (k, l) in lines.iter().enumerate() {
        let want = if k >= 4 {
            json!({"error":"node n3 unavailable","status":503})
        } else {
            json!({"result":"ok","status":200})
        };
        assert_eq!(*l, want, "line {k}");
    }
}

#[test]
fn foreign_bus_frames_are_counted_and_dropped() {
    let c = Cluster::start(2);
    let n = &c.nodes[0];
    let s = nng::Socket::new(nng::Protocol::Push0).unwrap();
    s.dial(&format!("tcp://{}:{}", n.ip, n.bus)).unwrap();
    for junk in [&b"hello"[..], b"IPB\x09 wrong version.......", &[0u8; 64]] {
        s.send(nng::Message::from(junk)).unwrap();
    }
    wait_until(Duration::from_secs(5), "malformed frames counted", || {
        let (_, body) = {
            let mut t = TcpStream::connect((n.ip.as_str(), n.admin)).unwrap();
            write!(t, "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
            let mut out = Vec::new();
            t.read_to_end(&mut out).unwrap();
            parse_response(&out)
        };
        body.contains("ipush_bus_malformed 3")
    });
    let u = c.uid_on(1, "z");
    assert_eq!(
        c.post(0, &format!("/pub?to={u}&from=op"), "still fine").0,
        200
    );
}

/// `&idempotency_key=K` across nodes: the channel id's owner node decides for a channel, the
/// uid's for a user, whichever node the publish (or its repeat) arrives at; keys, replays and
/// refusals cross the bus.
#[test]
fn a_keyed_publish_repeated_through_every_node_publishes_once() {
    let c = Cluster::start(3);
    let members: Vec<String> = (0..3).map(|i| c.uid_on(i, &format!("k{i}-"))).collect();
    for (i, u) in members.iter().enumerate() {
        assert_eq!(c.get(i, &format!("/sub?uid={u}&cid=keyed")).0, 200);
    }
    let ok = (200, json!({"result":"ok"}));
    let direct = format!("/pub?to={}&from=op&idempotency_key=once", members[0]);
    for i in 0..3 {
        let chan = c.post(i, "/pub?channel=keyed&from=op&idempotency_key=once", "one");
        assert_eq!(chan, ok, "channel through node {i}");
        assert_eq!(c.post(i, &direct, "direct"), ok, "user through node {i}");
    }
    let other = c.post(
        1,
        "/pub?channel=keyed&from=op&idempotency_key=once",
        "other",
    );
    assert_eq!(other.0, 422, "{other:?}");
    for (i, u) in members.iter().enumerate() {
        let (st, v) = c.get((i + 1) % 3, &format!("/msg?uid={u}"));
        assert_eq!(st, 200);
        let bodies: Vec<String> = v["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let m: Value = serde_json::from_str(l.as_str().unwrap()).unwrap();
                m["b"].as_str().unwrap().to_string()
            })
            .collect();
        let want: &[&str] = if i == 0 { &["one", "direct"] } else { &["one"] };
        assert_eq!(bodies, want, "{u}");
    }
    let replayed: f64 = (0..3)
        .map(|i| {
            let (_, body) = c.get(i, "/metrics");
            let body = body.as_str().unwrap_or_default().to_string();
            body.lines()
                .filter(|l| l.starts_with("ipush_idem_replayed{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        })
        .sum();
    assert_eq!(replayed, 4.0, "two channel and two user repeats");
}
