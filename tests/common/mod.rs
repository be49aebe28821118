//! Test harness: starts the real `ipush_server` binary on free ports with its own data
//! directory, and talks to it over real sockets (raw HTTP/1.1 and the chunked stream).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A name no other call in this test process gets (for temp dirs).
pub fn unique(tag: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("ipush-{tag}-{}-{n}", std::process::id())
}

/// A port nothing listens on just now (for "connection refused" cases; servers take port 0).
pub fn unused_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// What the server printed when it was ready: the ports it bound (it is started on port 0).
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    pub client_port: u16,
    pub admin_port: u16,
}

/// Parses `ipush_server ready client=HOST:PORT admin=HOST:PORT ...`.
fn parse_ready(line: &str) -> Option<Ready> {
    let port = |key: &str| -> Option<u16> {
        let v = line.split(' ').find_map(|w| w.strip_prefix(key))?;
        v.rsplit(':').next()?.parse().ok()
    };
    line.starts_with("ipush_server ready ").then_some(())?;
    Some(Ready {
        client_port: port("client=")?,
        admin_port: port("admin=")?,
    })
}

/// Waits (bounded) for a spawned server's ready line on its piped stdout; keeps draining its
/// stdout afterwards. `Err` says why it never got ready (it exited, or `limit` passed).
pub fn wait_ready(child: &mut Child, limit: Duration) -> Result<Ready, String> {
    let out = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(r) = parse_ready(&line) {
                let _ = tx.send(r);
            }
        }
    });
    let end = Instant::now() + limit;
    loop {
        if let Ok(r) = rx.recv_timeout(Duration::from_millis(20)) {
            return Ok(r);
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("exited with {st} before it was ready"));
        }
        if Instant::now() > end {
            return Err(format!("not ready within {limit:?}"));
        }
    }
}

/// Waits for `cond` up to `limit`, polling every 20 ms; panics with `what` on timeout.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

pub struct Server {
    /// Run the server as this user id (root only), e.g. for iptables owner rules.
    pub uid: Option<u32>,
    pub child: Option<Child>,
    pub client_port: u16,
    pub admin_port: u16,
    pub dir: PathBuf,
    pub pid_file: PathBuf,
}

impl Server {
    /// Starts a server with `--cores=2 --storage=memory` plus `extra` flags, on ports the
    /// kernel picks (it reports them when ready).
    pub fn start(extra: &[&str]) -> Server {
        Self::start_as(None, extra)
    }

    /// [`Server::start`] as user `uid` (its directory is made writable for it).
    pub fn start_as(uid: Option<u32>, extra: &[&str]) -> Server {
        let dir = std::env::temp_dir().join(unique("test"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if uid.is_some() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let pid_file = dir.join("ipush.pid");
        let mut s = Server {
            uid,
            child: None,
            client_port: 0,
            admin_port: 0,
            dir,
            pid_file,
        };
        if let Err(e) = s.launch(extra) {
            panic!("server did not start: {e}");
        }
        s
    }

    /// Spawns the server on this directory and its ports (0 the first time) and waits for it
    /// to be ready (60 s: start-up is fast, but a loaded 2-core machine can stall anything).
    fn launch(&mut self, extra: &[&str]) -> Result<(), String> {
        assert!(self.child.is_none(), "stop or kill the server first");
        let args = server_args(&self.dir, self.client_port, self.admin_port, extra);
        // Run inside the test's directory: a relative --data_dir lands there.
        let mut cmd = Command::new(server_bin());
        if let Some(uid) = self.uid {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(uid);
        }
        let mut child = cmd
            .args(&args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ipush_server");
        match wait_ready(&mut child, Duration::from_secs(60)) {
            Ok(r) => {
                (self.client_port, self.admin_port) = (r.client_port, r.admin_port);
                self.child = Some(child);
                Ok(())
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    pub fn client_addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// One admin request on a fresh connection; returns (status, body).
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.admin_port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        Ok(parse_response(&out))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let (st, body) = self.try_request("GET", path, b"").expect("admin request");
        (
            st,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    pub fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let (st, b) = self
            .try_request("POST", path, body.as_bytes())
            .expect("admin request");
        (st, serde_json::from_str(&b).unwrap_or(Value::String(b)))
    }

    /// `/stats` result object.
    pub fn stats(&self) -> Value {
        let (st, v) = self.get("/stats");
        assert_eq!(st, 200);
        v["result"].clone()
    }

    /// Offline message JSON values of `uid` via `/msg`.
    pub fn offline(&self, uid: &str) -> Vec<Value> {
        let (st, v) = self.get(&format!("/msg?uid={uid}"));
        assert_eq!(st, 200, "{v}");
        v["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let s = s.as_str().unwrap();
                assert!(s.ends_with('\n'));
                serde_json::from_str(s).unwrap()
            })
            .collect()
    }

    pub fn connect(&self, uid: &str) -> Client {
        Client::connect(&self.client_addr(), uid, "pw").expect("connect")
    }

    /// SIGTERM and wait (bounded) for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > end {
                let _ = child.kill();
                panic!("server did not stop within 15 s of SIGTERM");
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

/// (status, body) of a whole HTTP/1.1 response with Content-Length or close-delimited body.
pub fn parse_response(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A chunked-stream client speaking the seed protocol over a raw socket.
pub struct Client {
    pub sock: TcpStream,
    pub head: String,
    pub status: u16,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: &str, uid: &str, password: &str) -> std::io::Result<Client> {
        Self::connect_raw(
            addr,
            &format!(
                "GET /connect?uid={uid}&password={password} HTTP/1.1\r\nUser-Agent: mobile_socket_client/0.1.0\r\nAccept: */*\r\n\r\n"
            ),
        )
    }

    /// Sends `request` as is and reads the response head.
    pub fn connect_raw(addr: &str, request: &str) -> std::io::Result<Client> {
        Self::connect_on(TcpStream::connect(addr)?, request)
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).expect("send");
    }

    /// Sends one message as one chunk.
    pub fn send(&mut self, json: &str) {
        let frame = format!("{:x}\r\n{json}\r\n", json.len());
        self.send_raw(frame.as_bytes());
    }

    /// Next chunk payload (None = the terminating chunk or EOF), within `limit`.
    pub fn recv_chunk(&mut self, limit: Duration) -> Option<Vec<u8>> {
        self.sock.set_read_timeout(Some(limit)).unwrap();
        let mut tmp = [0u8; 65536];
        loop {
            if let Some(line_end) = find(&self.buf, b"\r\n") {
                let size_line = std::str::from_utf8(&self.buf[..line_end]).expect("size line");
                let size = usize::from_str_radix(size_line.trim(), 16).expect("hex size");
                if size == 0 {
                    return None;
                }
                if self.buf.len() >= line_end + 2 + size + 2 {
                    let payload = self.buf[line_end + 2..line_end + 2 + size].to_vec();
                    assert_eq!(&self.buf[line_end + 2 + size..line_end + 4 + size], b"\r\n");
                    self.buf.drain(..line_end + 4 + size);
                    return Some(payload);
                }
            }
            match self.sock.read(&mut tmp) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) => panic!("no chunk within {limit:?}: {e}"),
            }
        }
    }

    /// Next message as JSON, skipping server heartbeats unless `y` 0 is what we wait for.
    pub fn recv(&mut self) -> Value {
        let p = self
            .recv_chunk(Duration::from_secs(10))
            .expect("stream ended while waiting for a message");
        serde_json::from_slice(&p).expect("message is JSON")
    }

    /// True when the server ends the stream (terminating chunk or EOF) within `limit`.
    pub fn ends_within(&mut self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            match self.recv_chunk_or_timeout(Duration::from_millis(200)) {
                Ok(None) => return true,
                Ok(Some(_)) => {}
                Err(()) => {}
            }
        }
        false
    }

    pub fn recv_chunk_or_timeout(&mut self, limit: Duration) -> Result<Option<Vec<u8>>, ()> {
        self.sock.set_read_timeout(Some(limit)).unwrap();
        let mut tmp = [0u8; 65536];
        loop {
            if let Some(line_end) = find(&self.buf, b"\r\n") {
                let size_line = String::from_utf8_lossy(&self.buf[..line_end]).to_string();
                let size = usize::from_str_radix(size_line.trim(), 16).unwrap_or(0);
                if size == 0 {
                    return Ok(None);
                }
                if self.buf.len() >= line_end + 4 + size {
                    let payload = self.buf[line_end + 2..line_end + 2 + size].to_vec();
                    self.buf.drain(..line_end + 4 + size);
                    return Ok(Some(payload));
                }
            }
            match self.sock.read(&mut tmp) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return Err(())
                }
                Err(_) => return Ok(None),
            }
        }
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---- Helpers added for bad_input / slow_client / graceful_stop / config_errors / auth_jwt ----

/// One raw request on a fresh connection to `addr`; returns (status, head, body). Reads the
/// head, then `Content-Length` bytes of body (or until EOF when there is none), all bounded by
/// `limit`. Write errors are ignored (the server may answer and close before reading it all).
pub fn raw_exchange(addr: &str, request: &[u8], limit: Duration) -> (u16, String, Vec<u8>) {
    let mut sock = TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(limit)).unwrap();
    let _ = sock.write_all(request);
    read_response(&mut sock, limit)
}

/// Reads one HTTP/1.1 response (head, then Content-Length body or until EOF) within `limit`.
pub fn read_response(sock: &mut TcpStream, limit: Duration) -> (u16, String, Vec<u8>) {
    try_read_response(sock, limit).unwrap_or_else(|got| {
        panic!(
            "no complete response head within {limit:?}; got {:?}",
            String::from_utf8_lossy(&got)
        )
    })
}

/// [`read_response`], or `Err(the bytes read)` when no complete head arrived within `limit`
/// (say, the port is not an HTTP server's).
pub fn try_read_response(
    sock: &mut TcpStream,
    limit: Duration,
) -> Result<(u16, String, Vec<u8>), Vec<u8>> {
    let end = Instant::now() + limit;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 65536];
    let mut head_end = None;
    loop {
        if head_end.is_none() {
            head_end = find(&buf, b"\r\n\r\n").map(|i| i + 4);
        }
        if let Some(he) = head_end {
            let head = String::from_utf8_lossy(&buf[..he]).to_string();
            if let Some(cl) = header_value(&head, "content-length") {
                let cl: usize = cl.parse().expect("content-length");
                if buf.len() >= he + cl {
                    let status = head
                        .split(' ')
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    return Ok((status, head, buf[he..he + cl].to_vec()));
                }
            }
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(_) => break,
        }
    }
    let Some(he) = head_end else {
        return Err(buf);
    };
    let head = String::from_utf8_lossy(&buf[..he]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, head, buf[he..].to_vec()))
}

/// Value of header `name` (case-insensitive) in a response head.
pub fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// One admin request with a raw byte body; returns (status, body as JSON or string).
pub fn admin_raw(s: &Server, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let (st, b) = s.try_request(method, path, body).expect("admin request");
    (st, serde_json::from_str(&b).unwrap_or(Value::String(b)))
}

/// Sum of every sample of metric `name` (all label sets) in `/metrics`.
pub fn metric_sum(s: &Server, name: &str) -> f64 {
    let (st, body) = s.try_request("GET", "/metrics", b"").expect("metrics");
    assert_eq!(st, 200, "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// TCP connect to `addr` (IPv4) with SO_RCVBUF set to `rcvbuf` before the handshake, so the
/// advertised window stays small.
pub fn connect_small_rcvbuf(addr: &str, rcvbuf: i32) -> TcpStream {
    use std::os::fd::FromRawFd;
    let sa: std::net::SocketAddrV4 = addr.parse().expect("ipv4 addr");
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let v: libc::c_int = rcvbuf;
        let r = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(r, 0, "setsockopt SO_RCVBUF");
        let mut sin: libc::sockaddr_in = std::mem::zeroed();
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_port = sa.port().to_be();
        sin.sin_addr.s_addr = u32::from(*sa.ip()).to_be();
        let r = libc::connect(
            fd,
            &sin as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if r != 0 {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            panic!("connect {addr}: {e}");
        }
        TcpStream::from_raw_fd(fd)
    }
}

impl Client {
    /// Sends `request` on an already connected socket and reads the response head.
    pub fn connect_on(mut sock: TcpStream, request: &str) -> std::io::Result<Client> {
        sock.set_read_timeout(Some(Duration::from_secs(10)))?;
        sock.write_all(request.as_bytes())?;
        let mut buf = Vec::new();
        let mut tmp = [0u8; 4096];
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let n = sock.read(&mut tmp)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&tmp[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let rest = buf.split_off(end);
        Ok(Client {
            sock,
            head,
            status,
            buf: rest,
        })
    }

    /// Everything not yet consumed plus whatever arrives until EOF (or `limit` passes), raw.
    /// Returns (bytes, saw_eof).
    pub fn read_rest(&mut self, limit: Duration) -> (Vec<u8>, bool) {
        let end = Instant::now() + limit;
        let mut out = std::mem::take(&mut self.buf);
        let mut tmp = [0u8; 65536];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (out, false);
            }
            self.sock.set_read_timeout(Some(left)).unwrap();
            match self.sock.read(&mut tmp) {
                Ok(0) => return (out, true),
                Ok(n) => out.extend_from_slice(&tmp[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return (out, false)
                }
                Err(_) => return (out, true),
            }
        }
    }

    /// Next chunk that is not a `{"y":0}` heartbeat, as JSON; None when the stream ends.
    pub fn recv_non_hb(&mut self, limit: Duration) -> Option<Value> {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no non-heartbeat chunk within {limit:?}");
            let p = self.recv_chunk(left)?;
            let v: Value = serde_json::from_slice(&p).expect("chunk is JSON");
            if v != serde_json::json!({"y":0}) {
                return Some(v);
            }
        }
    }
}

// ---- Helpers added for durability / store_corruption ----

/// The arguments `Server::start` uses, for a given directory and ports (0: any free one), then
/// `extra`.
fn server_args(dir: &std::path::Path, client: u16, admin: u16, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--client_host=127.0.0.1".into(),
        format!("--client_port={client}"),
        format!("--admin_port={admin}"),
        "--bus_port=0".into(),
        format!("--pid_file={}", dir.join("ipush.pid").display()),
        format!("--data_dir={}", dir.join("data").display()),
        "--storage=memory".into(),
        "--cores=2".into(),
        "--log_level=warn".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Runs `cmd` (stdin and stdout null, stderr captured) expecting it to exit within `limit`:
/// its status and stderr. Kills it and panics, with what it wrote, if it runs on.
pub fn expect_exit(cmd: &mut Command, limit: Duration) -> (std::process::ExitStatus, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ipush_server");
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let end = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the server did not exit within {limit:?}: {}",
                reader.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().unwrap())
}

/// What a server start that was expected to fail did.
pub struct FailedStart {
    pub status: std::process::ExitStatus,
    pub stderr: String,
    pub took: Duration,
}

impl Server {
    /// The server's data directory (`--data_dir` unless `extra` overrode it).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// SIGKILL (no shutdown at all) and wait (bounded) for the process to be gone.
    pub fn kill9(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < end,
                "server still alive 15 s after SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the server again on the same directory (so the same `--data_dir`) and the same
    /// client and admin ports, with `extra`; waits up to 60 s for it to be ready (recovery
    /// included). A port the dead process still held is the server's to wait out.
    pub fn restart(&mut self, extra: &[&str]) {
        if let Err(e) = self.launch(extra) {
            panic!("server did not restart on {}: {e}", self.dir.display());
        }
    }

    /// Starts the server on the same directory with `extra` expecting it to refuse: waits up
    /// to `limit` for it to exit, captures stderr. Panics if it becomes healthy or runs on.
    pub fn start_expect_failure(&self, extra: &[&str], limit: Duration) -> FailedStart {
        assert!(self.child.is_none(), "stop or kill the server first");
        let args = server_args(&self.dir, 0, 0, extra);
        let started = Instant::now();
        let mut cmd = Command::new(server_bin());
        cmd.args(&args);
        let (status, stderr) = expect_exit(&mut cmd, limit);
        let took = started.elapsed();
        FailedStart {
            status,
            stderr,
            took,
        }
    }
}

/// Every file under `dir` (recursively) with its full contents, for "changed nothing" checks.
pub fn dir_contents(dir: &std::path::Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// The `wal-*.log` segments of `core_dir`, oldest first.
pub fn wal_files(core_dir: &std::path::Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(core_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("wal-") && n.ends_with(".log")
        })
        .collect();
    v.sort();
    v
}

// ---- Helpers added for crash_restart / data_dir_lock ----

/// The `ipush_server` binary: `IPUSH_SERVER` when set, else the one cargo built for the tests.
pub fn server_bin() -> PathBuf {
    std::env::var_os("IPUSH_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ipush_server")))
}

impl Server {
    /// Starts the server once more on exactly its client and admin ports and directory, with
    /// `extra`, and waits up to `limit` for `/health`. `Err(stderr)` when it exits first.
    pub fn restart_same_ports(&mut self, extra: &[&str], limit: Duration) -> Result<(), String> {
        assert!(self.child.is_none(), "stop or kill the server first");
        let args = server_args(&self.dir, self.client_port, self.admin_port, extra);
        let log = self.dir.join("restart.stderr");
        let child = Command::new(server_bin())
            .args(&args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("stderr file"))
            .spawn()
            .expect("spawn ipush_server");
        self.child = Some(child);
        let end = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = self.child.as_mut().unwrap().try_wait() {
                self.child = None;
                let err = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("exited with {st}: {err}"));
            }
            if let Ok((200, _)) = self.try_request("GET", "/health", b"") {
                return Ok(());
            }
            if Instant::now() > end {
                return Err(format!("not healthy within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

// ---- Cassandra / ScyllaDB (--storage=scylla) ----

/// The database of `IPUSH_TEST_SCYLLA` (`host:port`, e.g. the node of
/// `cql/cassandra/start.sh`). Unset: prints "<test>: skipped" and returns None, except under
/// `CI=true`, where a missing database fails the test.
pub fn scylla_or_skip(test: &str) -> Option<String> {
    match std::env::var("IPUSH_TEST_SCYLLA") {
        Ok(a) if !a.trim().is_empty() => Some(a.trim().to_string()),
        _ => {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "{test}: CI=true but IPUSH_TEST_SCYLLA is not set (start one with \
                 `bash cql/cassandra/start.sh` and export IPUSH_TEST_SCYLLA=127.0.0.1:9042)"
            );
            // Straight to stderr: libtest hides eprintln! of a passing test.
            let _ = writeln!(
                std::io::stderr(),
                "{test}: skipped (IPUSH_TEST_SCYLLA not set)"
            );
            None
        }
    }
}

/// A keyspace of its own for one test, dropped when the test ends (pass or fail).
pub struct TestKeyspace {
    pub name: String,
    pub addr: String,
}

impl TestKeyspace {
    /// A fresh, empty keyspace name (nothing is created: see `create`), or None when the
    /// test is skipped (see `scylla_or_skip`).
    pub fn new(test: &str) -> Option<TestKeyspace> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let addr = scylla_or_skip(test)?;
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ks = TestKeyspace {
            name: format!("ipush_t{}_{n}", std::process::id()),
            addr,
        };
        ks.run(&[format!("DROP KEYSPACE IF EXISTS {}", ks.name)]);
        Some(ks)
    }

    /// Creates the schema of cql/create_schema.cql in this keyspace.
    pub fn create(&self) {
        let cql = ipush::storage::scylla::CREATE_SCHEMA;
        self.run(&ipush::storage::scylla::schema_statements(cql, &self.name));
    }

    /// Runs statements (on a session of its own, from this thread).
    pub fn run(&self, statements: &[String]) {
        ipush::storage::scylla::execute_blocking(
            std::slice::from_ref(&self.addr),
            statements,
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("{} at {}: {e}", statements.join("; "), self.addr));
    }

    /// The server flags that use this keyspace (consistency one: a single dev node).
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--storage=scylla".into(),
            format!("--scylla_nodes={}", self.addr),
            format!("--scylla_keyspace={}", self.name),
            "--scylla_consistency=one".into(),
        ]
    }
}

impl Drop for TestKeyspace {
    fn drop(&mut self) {
        let _ = ipush::storage::scylla::execute_blocking(
            std::slice::from_ref(&self.addr),
            &[format!("DROP KEYSPACE IF EXISTS {}", self.name)],
            Duration::from_secs(60),
        );
    }
}

/// `&[String]` as `Vec<&str>` for `Server::start`.
pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

// ---- Checks shared by the durability, eviction and idempotency tests ----

/// Sends `{"y":0}` and reads until its answer, returning whatever non-heartbeat messages came
/// first. The stream handles a client's messages in order and awaits each storage write, so the
/// answer means every earlier subscribe/ack of this client is durable.
pub fn barrier(c: &mut Client) -> Vec<Value> {
    c.send(r#"{"y":0}"#);
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < end, "no heartbeat answer within 10 s");
        let m = c.recv();
        if m == json!({"y":0}) {
            return got;
        }
        got.push(m);
    }
}

pub fn ok(s: &Server, path: &str, body: &str) {
    let (st, v) = if path.starts_with("/pub") {
        s.post(path, body)
    } else {
        s.get(path)
    };
    assert_eq!((st, v), (200, json!({"result":"ok"})), "{path}");
}

/// (seq, body) of each offline message of `uid`.
pub fn listed(s: &Server, uid: &str) -> Vec<(u64, String)> {
    s.offline(uid)
        .iter()
        .map(|m| {
            (
                m["s"].as_u64().unwrap(),
                m["b"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// One admin request to `127.0.0.1:port` on a fresh connection: its status, or None when
/// it got no answer (refused, reset, timed out after 10 s).
pub fn admin_raw_port(port: u16, method: &str, path: &str, body: &[u8]) -> Option<u16> {
    admin_port_exchange(port, method, path, body).map(|(st, _)| st)
}

/// [`admin_raw_port`] with the answer's body.
pub fn admin_port_exchange(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    (!out.is_empty()).then(|| parse_response(&out))
}

// ---- store-level tests (no server) ----

/// Runs `f` on a glommio executor of its own and waits for it (the stores run on one).
pub fn on_executor<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

/// A fresh (removed if present) directory path `ipush-TAG-PID-NAME` under the temp dir.
pub fn fresh_dir(tag: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ipush-{tag}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}
