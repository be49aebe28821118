//! Support for the docs tests (`vectors.rs`, `tls_nginx.rs`, `moved_signal.rs`, `cors.rs`):
//! the shared vectors, a server (`common::server_bin`) on ports chosen here, so that a 2-node
//! static cluster can name them in `--nodes`, with its own directory, and raw client sockets
//! (chunked, WebSocket, SSE) over any byte transport (TLS too). Request and response helpers
//! come from `tests/common`: a test that uses this module declares `mod common;` too.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

// Re-exported for the tests that use this module (not every one uses each).
#[allow(unused_imports)]
pub use crate::common::{find, header_value as header, unused_port as free_port, wait_until};

/// Bounded wait for anything a test reads from a server.
pub const LIMIT: Duration = Duration::from_secs(20);

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One vectors file, parsed.
pub fn vectors(name: &str) -> Value {
    let path = repo_root().join("sdk/vectors").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_else(|_| panic!("bad hex {s}")))
        .collect()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A running `ipush_server`, killed (and its directory removed) on drop.
pub struct Server {
    child: Option<Child>,
    pub client_port: u16,
    pub admin_port: u16,
    pub bus_port: u16,
    pub dir: PathBuf,
}

impl Server {
    /// `--storage=memory --cores=2` on free ports, plus `extra`; retried on a port race.
    pub fn start(extra: &[&str]) -> Server {
        for _ in 0..5 {
            let ports = (free_port(), free_port(), free_port());
            if ports.0 == ports.1 || ports.1 == ports.2 || ports.0 == ports.2 {
                continue;
            }
            if let Some(s) = Self::try_start(ports, true, extra) {
                return s;
            }
        }
        panic!("ipush_server did not start (tried 5 times)");
    }

    /// A node of a static cluster: its ports come from its `--nodes` entry.
    pub fn start_node(ports: (u16, u16, u16), extra: &[&str]) -> Option<Server> {
        Self::try_start(ports, false, extra)
    }

    fn try_start(ports: (u16, u16, u16), port_flags: bool, extra: &[&str]) -> Option<Server> {
        let bin = crate::common::server_bin();
        assert!(
            bin.exists(),
            "no server binary at {} (build it with cargo build, or set IPUSH_SERVER)",
            bin.display()
        );
        let dir = std::env::temp_dir().join(format!(
            "ipush-docs-{}-{}-{}",
            std::process::id(),
            ports.0,
            ports.1
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut args: Vec<String> = vec![
            "--client_host=127.0.0.1".into(),
            format!("--pid_file={}", dir.join("ipush.pid").display()),
            format!("--data_dir={}", dir.join("data").display()),
            "--storage=memory".into(),
            "--cores=2".into(),
            "--log_level=error".into(),
        ];
        if port_flags {
            args.push(format!("--client_port={}", ports.0));
            args.push(format!("--admin_port={}", ports.1));
            args.push(format!("--bus_port={}", ports.2));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(&bin)
            .args(&args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let mut s = Server {
            child: Some(child),
            client_port: ports.0,
            admin_port: ports.1,
            bus_port: ports.2,
            dir,
        };
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            if let Ok(Some(_)) = s.child.as_mut().expect("child").try_wait() {
                s.child = None;
                return None;
            }
            if matches!(s.admin("GET", "/health", b""), Ok((200, _, _))) {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        panic!("ipush_server not healthy within 60 s");
    }

    /// A 2-node static cluster (`--nodes`, nodes n1 and n2) on free ports, plus `extra` on
    /// both; retried on a port race.
    pub fn pair(extra: &[&str]) -> (Server, Server) {
        for _ in 0..5 {
            let p: Vec<(u16, u16, u16)> = (0..2)
                .map(|_| (free_port(), free_port(), free_port()))
                .collect();
            let list = format!(
                "--nodes=n1=127.0.0.1:{}:{}:{},n2=127.0.0.1:{}:{}:{}",
                p[0].0, p[0].1, p[0].2, p[1].0, p[1].1, p[1].2
            );
            let args = |node: &'static str| {
                let mut a = vec![node, list.as_str()];
                a.extend_from_slice(extra);
                a
            };
            let a = Server::start_node(p[0], &args("--node=n1"));
            let b = Server::start_node(p[1], &args("--node=n2"));
            if let (Some(a), Some(b)) = (a, b) {
                for (s, peer) in [(&a, "n2"), (&b, "n1")] {
                    wait_until(LIMIT, "the cluster bus up", || {
                        s.admin("GET", "/health", b"")
                            .ok()
                            .and_then(|(_, _, body)| serde_json::from_slice::<Value>(&body).ok())
                            .is_some_and(|v| v["result"]["peers"][peer] == "up")
                    });
                }
                return (a, b);
            }
        }
        panic!("no 2-node cluster after 5 tries");
    }

    /// The client port (`HOST:PORT`) of `uid`'s node, as `/shard` says.
    pub fn shard_of(&self, uid: &str) -> String {
        let v = self.admin_ok("GET", &format!("/shard?uid={}", enc(uid)), b"");
        v["result"].as_str().expect("/shard result").to_string()
    }

    /// One admin request on its own connection: (status, head, body).
    pub fn admin(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, String, Vec<u8>)> {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        exchange(self.admin_port, &req)
    }

    /// An admin request that must answer 200.
    pub fn admin_ok(&self, method: &str, path: &str, body: &[u8]) -> Value {
        let (st, _, b) = self.admin(method, path, body).expect("admin request");
        let text = String::from_utf8_lossy(&b);
        assert_eq!(st, 200, "{method} {path}: {text}");
        serde_json::from_slice(&b).unwrap_or(Value::Null)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// SIGTERM, then waits (bounded) for the exit.
    pub fn terminate(&mut self) {
        let mut child = self.child.take().expect("running");
        // SAFETY: plain kill(2) on our child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if child.try_wait().expect("wait").is_some() {
                return;
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                panic!("server did not exit within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends `req` on a new connection to 127.0.0.1:`port`; reads one response (Content-Length
/// body, else until EOF) with `common::try_read_response`. `Err` when nothing listens there or
/// what does sends no HTTP response (a server starting on a port another process took).
pub fn exchange(port: u16, req: &[u8]) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    let _ = s.write_all(req);
    crate::common::try_read_response(&mut s, LIMIT)
        .map_err(|_| std::io::Error::other("no response head"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Chunked,
    WebSocket,
    Sse,
}

/// A raw client stream on any byte transport (a TCP socket, or a TLS stream).
pub struct Stream<S: Read + Write> {
    pub sock: S,
    pub head: String,
    pub status: u16,
    pub buf: Vec<u8>,
    pub eof: bool,
}

/// The request head of a `/connect`.
pub fn connect_request(host: &str, query: &str, kind: Kind, extra_headers: &str) -> String {
    let mut req = format!("GET /connect?{query} HTTP/1.1\r\nHost: {host}\r\n");
    match kind {
        Kind::Chunked => {}
        Kind::WebSocket => req.push_str(
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        ),
        Kind::Sse => req.push_str("Accept: text/event-stream\r\n"),
    }
    req.push_str(extra_headers);
    req.push_str("\r\n");
    req
}

impl Stream<TcpStream> {
    /// `GET /connect?<query>` on 127.0.0.1:`port`.
    pub fn open(port: u16, query: &str, kind: Kind, extra_headers: &str) -> Self {
        let sock = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        sock.set_read_timeout(Some(Duration::from_millis(250)))
            .expect("timeout");
        let req = connect_request(&format!("127.0.0.1:{port}"), query, kind, extra_headers);
        Stream::start(sock, &req)
    }
}

impl<S: Read + Write> Stream<S> {
    /// Sends `request`, reads the response head; the socket must have a short read timeout.
    pub fn start(mut sock: S, request: &str) -> Self {
        sock.write_all(request.as_bytes()).expect("send request");
        let mut s = Stream {
            sock,
            head: String::new(),
            status: 0,
            buf: Vec::new(),
            eof: false,
        };
        s.read_until(|b| find(b, b"\r\n\r\n").is_some());
        let he = find(&s.buf, b"\r\n\r\n").expect("response head") + 4;
        s.head = String::from_utf8_lossy(&s.buf[..he]).to_string();
        s.buf.drain(..he);
        s.status = s
            .head
            .split(' ')
            .nth(1)
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
        s
    }

    /// Reads until `done(bytes so far)`, EOF, or [`LIMIT`] (then panics).
    pub fn read_until(&mut self, done: impl Fn(&[u8]) -> bool) -> &[u8] {
        let end = Instant::now() + LIMIT;
        let mut tmp = vec![0u8; 1 << 16];
        while !done(&self.buf) && !self.eof {
            assert!(
                Instant::now() < end,
                "timed out; have {:?}",
                String::from_utf8_lossy(&self.buf[..self.buf.len().min(400)])
            );
            match self.sock.read(&mut tmp) {
                Ok(0) => self.eof = true,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => self.eof = true,
            }
        }
        &self.buf
    }

    /// Exactly `n` more bytes (fewer only at EOF), taken out of the buffer.
    pub fn take(&mut self, n: usize) -> Vec<u8> {
        self.read_until(|b| b.len() >= n);
        let n = n.min(self.buf.len());
        self.buf.drain(..n).collect()
    }

    /// Everything until the server closes.
    pub fn take_to_eof(&mut self) -> Vec<u8> {
        self.read_until(|_| false);
        std::mem::take(&mut self.buf)
    }

    pub fn send(&mut self, b: &[u8]) {
        self.sock.write_all(b).expect("send");
    }
}

/// `<hex len>\r\n<payload>\r\n`, written independently of the server's encoder.
pub fn chunk(payload: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    out
}

/// A masked client WebSocket frame (key 37fa213d).
pub fn ws_client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut out = vec![0x80 | opcode];
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n < 65536 {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// One server frame: (opcode, payload, raw bytes).
pub type WsFrame = (u8, Vec<u8>, Vec<u8>);

/// Splits complete unmasked server frames, and the bytes they used.
pub fn ws_frames(mut buf: &[u8]) -> (Vec<WsFrame>, usize) {
    let mut out = Vec::new();
    let mut used = 0;
    while buf.len() >= 2 {
        let mut n = (buf[1] & 0x7f) as usize;
        let mut i = 2;
        if n == 126 {
            if buf.len() < 4 {
                break;
            }
            n = u16::from_be_bytes([buf[2], buf[3]]) as usize;
            i = 4;
        } else if n == 127 {
            if buf.len() < 10 {
                break;
            }
            n = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")) as usize;
            i = 10;
        }
        assert_eq!(buf[1] & 0x80, 0, "server frames are unmasked");
        if buf.len() < i + n {
            break;
        }
        out.push((buf[0] & 0x0f, buf[i..i + n].to_vec(), buf[..i + n].to_vec()));
        used += i + n;
        buf = &buf[i + n..];
    }
    (out, used)
}

/// Complete chunks at the start of `buf`: (payloads, saw the last chunk).
pub fn chunks(buf: &[u8]) -> (Vec<Vec<u8>>, bool) {
    let mut out = Vec::new();
    let mut b = buf;
    loop {
        let Some(nl) = find(b, b"\r\n") else {
            return (out, false);
        };
        let size = usize::from_str_radix(std::str::from_utf8(&b[..nl]).expect("size"), 16)
            .expect("hex size");
        if size == 0 {
            return (out, b.len() >= nl + 4);
        }
        if b.len() < nl + 4 + size {
            return (out, false);
        }
        out.push(b[nl + 2..nl + 2 + size].to_vec());
        b = &b[nl + 4 + size..];
    }
}

/// A percent-encoded query value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}
