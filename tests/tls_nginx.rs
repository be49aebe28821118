//! conf/nginx-tls.conf as users deploy it: a self-signed certificate (openssl CLI), nginx with
//! that file on free ports in a temp prefix, and a chunked stream, a WebSocket, SSE and
//! `POST /send` through it over TLS (the TLS client is `openssl s_client`, verifying the
//! certificate). Without nginx or openssl this prints "skipped"; with CI=true it fails instead.

mod common;
mod docs_support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use docs_support::{
    chunks, connect_request, free_port, ws_client_frame, ws_frames, Kind, Server, Stream,
};

fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TLS connection made by `openssl s_client`: its stdin and stdout are the plaintext.
struct Tls {
    child: Child,
    stdin: ChildStdin,
    rx: Receiver<Vec<u8>>,
    pending: Vec<u8>,
}

impl Tls {
    fn connect(port: u16, ca: &Path) -> Tls {
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-ign_eof", "-verify_return_error"])
            .args(["-connect", &format!("127.0.0.1:{port}")])
            .args(["-servername", "localhost", "-verify_hostname", "localhost"])
            .arg("-CAfile")
            .arg(ca)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn openssl s_client");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Tls {
            child,
            stdin,
            rx,
            pending: Vec::new(),
        }
    }
}

impl Read for Tls {
    /// Like a socket with a 250 ms read timeout: WouldBlock when nothing came.
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pending.is_empty() {
            match self.rx.recv_timeout(Duration::from_millis(250)) {
                Ok(b) => self.pending = b,
                Err(RecvTimeoutError::Timeout) => return Err(std::io::ErrorKind::WouldBlock.into()),
                Err(RecvTimeoutError::Disconnected) => return Ok(0),
            }
        }
        let n = out.len().min(self.pending.len());
        out[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

impl Write for Tls {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.stdin.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.stdin.flush()
    }
}

impl Drop for Tls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Nginx {
    child: Child,
    port: u16,
}

impl Drop for Nginx {
    /// SIGTERM (nginx's fast shutdown), then SIGKILL if it lingers. The test runs nginx with
    /// `master_process off`, so there is no worker to orphan.
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on our child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test's directory, removed at the end whatever happens.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// conf/nginx-tls.conf with its listen port, certificate and upstream set for this test.
fn site_conf(port: u16, upstream: u16, dir: &Path) -> String {
    let text = std::fs::read_to_string(docs_support::repo_root().join("conf/nginx-tls.conf"))
        .expect("conf/nginx-tls.conf");
    let mut out = text.clone();
    for (from, to) in [
        ("listen 443 ssl;", format!("listen 127.0.0.1:{port} ssl;")),
        (
            "/etc/ssl/ipush/fullchain.pem",
            dir.join("cert.pem").display().to_string(),
        ),
        (
            "/etc/ssl/ipush/privkey.pem",
            dir.join("key.pem").display().to_string(),
        ),
        (
            "server 127.0.0.1:9000;",
            format!("server 127.0.0.1:{upstream};"),
        ),
    ] {
        assert!(
            out.contains(from),
            "conf/nginx-tls.conf no longer has {from:?}"
        );
        out = out.replace(from, &to);
    }
    out
}

fn start_nginx(dir: &Path, upstream: u16) -> Nginx {
    for _ in 0..5 {
        let port = free_port();
        std::fs::write(dir.join("site.conf"), site_conf(port, upstream, dir)).expect("write");
        let d = dir.display();
        let main = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             include {d}/site.conf;\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), main).expect("write");
        let mut child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nginx");
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            if child.try_wait().expect("wait").is_some() {
                break; // port taken, or a bad config (error.log says): try again
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Nginx { child, port };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!(
        "nginx did not start: {}",
        std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
    );
}

/// The de-chunked body: a proxy may re-chunk (merge messages into one chunk), so compare
/// the payload bytes, not the chunk boundaries.
fn dechunked(b: &[u8]) -> Vec<u8> {
    chunks(b).0.concat()
}

#[test]
fn chunked_websocket_sse_and_send_through_the_tls_front() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !have("nginx", "-v") || !have("openssl", "version") {
        assert!(
            !ci,
            "nginx or openssl missing in CI: .ci/docs.sh install installs them"
        );
        println!("skipped: nginx or openssl not installed (.ci/docs.sh install)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("ipush-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let _cleanup = TempDir(dir.clone());
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(Stdio::null()));
    let srv = Server::start(&[]);
    let nginx = start_nginx(&dir, srv.client_port);
    let ca = dir.join("cert.pem");
    let host = format!("localhost:{}", nginx.port);

    // chunked: an offline message replayed, then a live one
    srv.admin_ok("POST", "/pub?to=user001&from=user002", b"hello");
    let req = connect_request(&host, "uid=user001&password=pw", Kind::Chunked, "");
    let mut c = Stream::start(Tls::connect(nginx.port, &ca), &req);
    assert_eq!(c.status, 200, "{}", c.head);
    assert!(c
        .head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked"));
    let first = br#"{"y":3,"f":"user002","t":"user001","b":"hello","s":1}"#.to_vec();
    c.read_until(|b| dechunked(b).len() >= first.len());
    srv.admin_ok(
        "POST",
        "/pub?to=user001&from=user002",
        "über TLS".as_bytes(),
    );
    let second = r#"{"y":3,"f":"user002","t":"user001","b":"über TLS","s":2}"#.as_bytes();
    let want = [&first[..], second].concat();
    c.read_until(|b| dechunked(b).len() >= want.len());
    assert_eq!(
        String::from_utf8_lossy(&dechunked(&c.buf)),
        String::from_utf8_lossy(&want)
    );

    // WebSocket both ways: a heartbeat answered, a sent message delivered, an ack, a close
    let req = connect_request(&host, "uid=user002&password=pw", Kind::WebSocket, "");
    let mut w = Stream::start(Tls::connect(nginx.port, &ca), &req);
    assert_eq!(w.status, 101, "{}", w.head);
    w.send(&ws_client_frame(1, br#"{"y":0}"#));
    w.read_until(|b| !ws_frames(b).0.is_empty());
    let (frames, used) = ws_frames(&w.buf);
    assert_eq!(frames[0].2, b"\x81\x07{\"y\":0}", "heartbeat answer");
    w.buf.drain(..used);
    w.send(&ws_client_frame(
        1,
        br#"{"y":3,"f":"user002","t":"user001","b":"via wss"}"#,
    ));
    let third = br#"{"y":3,"f":"user002","t":"user001","b":"via wss","s":3}"#;
    let want = [&want[..], &third[..]].concat();
    c.read_until(|b| dechunked(b).len() >= want.len());
    assert_eq!(
        dechunked(&c.buf),
        want,
        "the WebSocket's message on the stream"
    );
    w.send(&ws_client_frame(8, &1000u16.to_be_bytes()));
    w.read_until(|b| !ws_frames(b).0.is_empty());
    assert_eq!(
        ws_frames(&w.buf).0[0].2,
        b"\x88\x02\x03\xe8",
        "close echoed"
    );

    // SSE, and POST /send (its way up)
    let req = connect_request(&host, "uid=user003&password=pw", Kind::Sse, "");
    let mut e = Stream::start(Tls::connect(nginx.port, &ca), &req);
    assert_eq!(e.status, 200, "{}", e.head);
    assert!(e.head.contains("text/event-stream"), "{}", e.head);
    let body = br#"{"y":3,"t":"user003","b":"to myself"}"#;
    let send = format!(
        "POST /send?uid=user003&password=pw HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        std::str::from_utf8(body).expect("ascii")
    );
    let s = Stream::start(Tls::connect(nginx.port, &ca), &send);
    assert_eq!(s.status, 200, "{}", s.head);
    let event = "id: 1\ndata: {\"y\":3,\"f\":\"user003\",\"t\":\"user003\",\"b\":\"to myself\",\"s\":1}\n\n";
    // nginx sends the close-delimited event stream chunked (HTTP/1.1 client): de-chunk it
    let te_chunked = e
        .head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body_of = |b: &[u8]| if te_chunked { dechunked(b) } else { b.to_vec() };
    e.read_until(|b| body_of(b).len() >= event.len());
    assert_eq!(String::from_utf8_lossy(&body_of(&e.buf)), event);

    // the server ends the chunked stream (replaced): the end reaches the client through TLS
    let _again = Stream::open(
        srv.client_port,
        "uid=user001&password=pw",
        Kind::Chunked,
        "",
    );
    // (nginx keeps the client connection open after the response: wait for the last chunk)
    let rest = c.read_until(|b| chunks(b).1).to_vec();
    let (_, ended) = chunks(&rest);
    assert!(ended, "the last chunk through the front");
    assert!(
        dechunked(&rest).ends_with(br#"{"error":"replaced"}"#),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
    drop((w, e));
    drop(nginx);
}
