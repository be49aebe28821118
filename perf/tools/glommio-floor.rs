//! glommio floor for perf/RESULTS.md (see floor-run.sh): one task per idle connection.
//! Floor: glommio listener, one task per accepted connection awaiting a read into an
//! empty buffer (mode "empty") or a 1-byte stack buffer (mode "byte").
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
fn main() {
    let port: u16 = std::env::args().nth(1).unwrap().parse().unwrap();
    let mode = std::env::args().nth(2).unwrap_or("byte".into());
    let cores: usize = std::env::args().nth(3).map(|s| s.parse().unwrap()).unwrap_or(1);
    let mut hs = Vec::new();
    for c in 0..cores {
        let mode = mode.clone();
        hs.push(LocalExecutorBuilder::new(Placement::Fixed(c)).spawn(move || async move {
            let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            l.set_reuse_port(true).unwrap();
            l.set_reuse_address(true).unwrap();
            l.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into()).unwrap();
            l.listen(16384).unwrap();
            let l = unsafe { <TcpListener as std::os::fd::FromRawFd>::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(l)) };
            loop {
                let mut s = l.accept().await.unwrap();
                let mode = mode.clone();
                glommio::spawn_local(async move {
                    if s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").await.is_err() { return; }
                    if mode == "empty" {
                        let mut b: [u8; 0] = [];
                        let _ = s.read(&mut b).await;
                        // empty read returns at once; then await a real 1-byte read
                    }
                    let mut b = [0u8; 1];
                    loop {
                        match s.read(&mut b).await { Ok(0) | Err(_) => break, _ => {} }
                    }
                }).detach();
            }
        }).unwrap());
    }
    for h in hs { h.join().unwrap(); }
}
