//! Offline replay then live delivery: no gap and no duplicate at the seam, even while another
//! thread publishes as fast as it can.
mod common;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn no_gap_no_duplicate_at_the_seam_under_concurrent_publishing() {
    let s = Server::start(&["--max_offline_msg_num=100000"]);
    let admin = s.admin_port;
    let done = Arc::new(AtomicBool::new(false));
    const TOTAL: u64 = 1500;
    let publisher = {
        let done = done.clone();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut sock = std::net::TcpStream::connect(("127.0.0.1", admin)).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut buf = [0u8; 1024];
            for i in 1..=TOTAL {
                let body = format!("m{i}");
                let req = format!(
                    "POST /pub?to=seam&from=op HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                sock.write_all(req.as_bytes()).unwrap();
                let mut got = Vec::new();
                while !String::from_utf8_lossy(&got).ends_with("{\"result\":\"ok\"}") {
                    let n = sock.read(&mut buf).unwrap();
                    assert!(n > 0, "admin closed");
                    got.extend_from_slice(&buf[..n]);
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    // Connect, read a little, reconnect, several times while the publisher runs: each new
    // stream must continue exactly after what was acked.
    let mut next: u64 = 1;
    let mut rounds = 0;
    while next <= TOTAL {
        let mut c = s.connect("seam");
        let take = if done.load(Ordering::SeqCst) {
            u64::MAX
        } else {
            200
        };
        let mut taken = 0;
        while taken < take && next <= TOTAL {
            let m = c.recv();
            if m["y"] == 0 {
                continue;
            }
            assert_eq!(
                m["s"].as_u64(),
                Some(next),
                "gap or duplicate at seq {next}: {m}"
            );
            assert_eq!(m["b"], format!("m{next}"));
            next += 1;
            taken += 1;
        }
        // Ack what we have, then drop the stream (the next connect replays the rest).
        c.send(&format!(r#"{{"y":5,"s":{}}}"#, next - 1));
        c.send(r#"{"y":0}"#);
        loop {
            let m = c.recv();
            if m == serde_json::json!({"y":0}) {
                break;
            }
            // Live messages that raced the ack are not acked: they come again next time.
        }
        rounds += 1;
        assert!(rounds < 1000);
    }
    publisher.join().unwrap();
    assert!(rounds >= 2, "the test reconnected at least once ({rounds})");
    assert!(s.offline("seam").is_empty());
}
