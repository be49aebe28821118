//! Client-facing transports: accepting on the client port, handing sockets to their owner core,
//! and the chunked stream itself. Runs on each core's executor.

pub mod accept;
pub mod stream;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use futures_lite::AsyncReadExt;
use glommio::net::TcpStream;

use crate::http::head::{parse_head, HeadError, RequestHead};

#[derive(Debug)]
pub enum HeadRead {
    /// A complete head and the bytes that followed it.
    Head(RequestHead, Vec<u8>),
    /// The peer closed before sending a byte (keep-alive end).
    Closed,
    Bad(HeadError),
    Io(io::Error),
}

/// Reads one request head into `buf` (which may already hold pipelined bytes), growing it
/// only as bytes arrive; never more than `max` bytes.
pub async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>, max: usize) -> HeadRead {
    loop {
        if !buf.is_empty() {
            match parse_head(buf, max) {
                Ok(Some((head, used))) => {
                    let rest = buf.split_off(used);
                    buf.clear();
                    return HeadRead::Head(head, rest);
                }
                Ok(None) => {}
                Err(e) => return HeadRead::Bad(e),
            }
        }
        let len = buf.len();
        // Start small: a burst of half-sent heads must not pin 4 KiB each.
        let want = (max + 1 - len).min(if len == 0 { 512 } else { 4096 });
        buf.resize(len + want, 0);
        match stream.read(&mut buf[len..]).await {
            Ok(0) => {
                buf.truncate(len);
                return if len == 0 {
                    HeadRead::Closed
                } else {
                    HeadRead::Io(io::ErrorKind::UnexpectedEof.into())
                };
            }
            Ok(n) => buf.truncate(len + n),
            Err(e) => {
                buf.truncate(len);
                return HeadRead::Io(e);
            }
        }
    }
}

/// Ends a connection we refused: half-close, then read and discard what the client still
/// sends (bounded in bytes and time). Closing with unread input would make the kernel send a
/// reset, and the client would lose the error response we just wrote.
pub async fn linger_close(stream: &mut TcpStream) {
    use futures_lite::AsyncWriteExt;
    let _ = stream.close().await;
    let mut sink = vec![0u8; 4096];
    let mut left: usize = 1 << 20;
    let _ = glommio::timer::timeout(Duration::from_secs(2), async {
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
        Ok(())
    })
    .await;
}

/// Low latency for pushes, and dead peers found within a few heartbeats.
pub fn tune_socket(stream: &TcpStream, heartbeat: Duration) {
    // SAFETY: the fd stays open for the duration of this borrow (owned by `stream`).
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let sock = socket2::SockRef::from(&fd);
    let _ = sock.set_nodelay(true);
    let _ = sock.set_tcp_user_timeout(Some(heartbeat * 3));
}
