//! Client-facing transports: accepting on the client port, handing sockets to their owner core,
//! the streams (chunked, WebSocket, SSE) and their pure decoders. Runs on each core's executor.

pub mod accept;
pub mod decode;
pub mod stream;
pub mod ws;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use futures_lite::AsyncReadExt;
use glommio::net::TcpStream;

use crate::http::head::{parse_head, HeadError, RequestHead};

/// Returned once per request and matched at once: boxing the head would cost an allocation
/// per request to save a copy of ~250 bytes.
#[allow(clippy::large_enum_variant)]
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

/// Reads a request body of `Content-Length` bytes (answering `Expect: 100-continue`), of which
/// `have` already arrived; refuses chunked bodies (411) and bodies over `max` (413).
pub async fn read_body(
    stream: &mut TcpStream,
    head: &RequestHead,
    mut have: Vec<u8>,
    max: usize,
) -> Result<Vec<u8>, (u16, String)> {
    use futures_lite::AsyncWriteExt;
    if head.chunked {
        return Err((
            411,
            "chunked request bodies are not supported: send Content-Length".into(),
        ));
    }
    let len = head.content_length.unwrap_or(0);
    if len > max {
        return Err((413, format!("body over {max} bytes")));
    }
    if len > have.len()
        && head.expect_continue
        && stream
            .write_all(crate::http::response::CONTINUE_100)
            .await
            .is_err()
    {
        return Err((400, "connection lost".into()));
    }
    while have.len() < len {
        let at = have.len();
        have.resize(len, 0);
        let n = match glommio::timer::timeout(Duration::from_secs(60), async {
            Ok(stream.read(&mut have[at..]).await)
        })
        .await
        {
            Ok(Ok(n)) if n > 0 => n,
            _ => return Err((400, "body not received".into())),
        };
        have.truncate(at + n);
    }
    have.truncate(len);
    Ok(have)
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
