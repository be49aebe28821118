//! The client port: accepts, reads the request head (bounded in size and time), authenticates,
//! picks the transport (chunked, WebSocket, SSE) and codec, and starts the stream on the core
//! that owns the uid; also serves `/demo` and `/send`, and the CORS preflight (`OPTIONS`) of
//! both. Runs on every core's executor.

use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use futures_lite::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream};

use super::stream::NewStream;
use super::{read_body, read_head, ws, HeadRead};
use crate::auth::Authenticator;
use crate::http::cors;
use crate::http::head::{Method, RequestHead, MAX_HEAD_BYTES};
use crate::http::query::query_param;
use crate::http::response::{
    strip_body_for_head, write_error_with, write_redirect, write_response,
};
use crate::msg::{Answer, CoreMsg, Handoff, Opening, Request};
use crate::protocol::{codec, valid_id, Codec, Mode, Transport};
use crate::router::Router;
use crate::shard::Shard;

/// The demo client page (`GET /demo`), plain HTML and JS, no build step.
const DEMO: &str = include_str!("../../web/demo.html");

/// The JS SDK's browser bundle (`GET /ipush.js`), built by `npm run build:web` in sdk/js.
const SDK_JS: &str = include_str!("../../web/ipush.js");

/// What a core's client port needs: its router (and through it the core's state) and the
/// authenticator.
pub struct ClientPort {
    pub router: Rc<Router>,
    pub auth: Authenticator,
}

/// Connections accepted in a row before the accept loop lets the heads of the ones it took
/// be read: a burst is answered as it is taken in, not after the whole queue is drained.
const ACCEPT_BATCH: u32 = 32;

/// A core's listening socket on the client port, with its fd for [`accept_now`] (glommio's
/// listener does not give it out).
pub struct ClientListener {
    fd: RawFd,
    inner: TcpListener,
}

impl FromRawFd for ClientListener {
    /// `fd` must be a non-blocking listening socket (see `server::listen`).
    unsafe fn from_raw_fd(fd: RawFd) -> Self {
        ClientListener {
            fd,
            // SAFETY: the caller hands over the fd; the glommio listener owns and closes it.
            inner: unsafe { TcpListener::from_raw_fd(fd) },
        }
    }
}

pub async fn client_loop(port: Rc<ClientPort>, listener: ClientListener) {
    let mut in_row = 0u32;
    loop {
        // Drain the accept queue with one accept4(2) per connection (glommio's accept costs
        // four syscalls: it toggles O_NONBLOCK around each); wait through glommio when empty.
        let stream = match accept_now(listener.fd) {
            Some(r) => {
                in_row += 1;
                if in_row >= ACCEPT_BATCH {
                    in_row = 0;
                    futures_lite::future::yield_now().await;
                }
                r
            }
            None => {
                in_row = 0;
                listener.inner.accept().await.map_err(std::io::Error::from)
            }
        };
        match stream {
            Ok(stream) => {
                glommio::spawn_local(on_client(port.clone(), stream)).detach();
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; the listener stays.
                tracing::warn!(error = %e, "accept on client port failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        };
    }
}

/// One connection from the accept queue without waiting (the listener is non-blocking, see
/// `server::listen`); `None` when the queue is empty.
fn accept_now(listener: RawFd) -> Option<std::io::Result<TcpStream>> {
    loop {
        // SAFETY: accept4 on our listening fd; null address pointers are allowed. The new fd
        // is blocking like the ones glommio's accept returns (its I/O never relies on
        // O_NONBLOCK) and close-on-exec.
        let fd = unsafe {
            libc::accept4(
                listener,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: a fresh fd that nothing else owns.
            return Some(Ok(unsafe { TcpStream::from_raw_fd(fd) }));
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::Interrupted => continue,
            // ECONNABORTED: that peer gave up; the next one may be there.
            std::io::ErrorKind::ConnectionAborted => continue,
            std::io::ErrorKind::WouldBlock => return None,
            _ => return Some(Err(e)),
        }
    }
}

async fn respond(stream: TcpStream, status: u16, reason: &str) {
    respond_to(stream, false, &[], status, reason).await
}

/// [`respond`] to a request whose method is known: `head_only` (HEAD) sends the head alone;
/// `extra` are its CORS headers.
async fn respond_to(
    mut stream: TcpStream,
    head_only: bool,
    extra: &[(&str, &str)],
    status: u16,
    reason: &str,
) {
    let mut out = Vec::with_capacity(256);
    write_error_with(&mut out, status, reason, extra, false);
    if head_only {
        strip_body_for_head(&mut out, 0);
    }
    let _ = stream.write_all(&out).await;
    super::linger_close(&mut stream).await;
}

/// A refusal: (status, reason), counted as a bad request unless it is an auth failure.
type Refusal = (u16, String);

fn bad(shard: &Shard, status: u16, reason: impl Into<String>) -> Refusal {
    shard.bump(&shard.stats().bad_request);
    (status, reason.into())
}

/// The uid, after checking it and its password.
fn authenticate(port: &ClientPort, head: &RequestHead) -> Result<String, Refusal> {
    let shard = port.router.shard();
    let uid = match query_param(&head.query, "uid") {
        Ok(Some(u)) if valid_id(&u) => u,
        _ => return Err(bad(shard, 400, "invalid uid")),
    };
    let password = match query_param(&head.query, "password") {
        Ok(p) => p.unwrap_or_default(),
        Err(_) => return Err(bad(shard, 400, "invalid password")),
    };
    if let Err(e) = port.auth.check(&uid, &password) {
        tracing::debug!(%uid, error = %e, "auth failed");
        shard.bump(&shard.stats().auth_fail);
        return Err((401, "auth failed".into()));
    }
    Ok(uid)
}

fn codec_param(shard: &Shard, head: &RequestHead) -> Result<Codec, Refusal> {
    match query_param(&head.query, "codec") {
        Ok(None) => Ok(Codec::Json),
        Ok(Some(c)) if c == "json" => Ok(Codec::Json),
        Ok(Some(c)) if c == "msgpack" => Ok(Codec::MsgPack),
        _ => Err(bad(shard, 400, "invalid codec (json or msgpack)")),
    }
}

/// The client address of the node that owns the uid of a `/connect`, when that is another node.
async fn remote_owner(router: &Router, head: &RequestHead) -> Option<String> {
    let view = router.view();
    if !view.is_cluster() {
        return None;
    }
    let uid = query_param(&head.query, "uid").ok()??;
    if !valid_id(&uid) {
        return None;
    }
    if view.is_dynamic() {
        // A slot in motion here may settle on another node: wait (bounded) and send it there.
        return match router.settled_route(&uid).await {
            crate::router::Route::Node(n) => Some(router.view().node(n).client_addr()),
            _ => None,
        };
    }
    let node = view.locate(&uid).node;
    (node != view.me()).then(|| view.node(node).client_addr())
}

/// What a `/connect` asks for: transport, codec and the rest of its opening.
fn opening(port: &ClientPort, head: &RequestHead, leftover: Vec<u8>) -> Result<Opening, Refusal> {
    let shard = port.router.shard().as_ref();
    if head.method != Method::Get {
        return Err(bad(shard, 405, "method not allowed"));
    }
    let uid = authenticate(port, head)?;
    let codec = codec_param(shard, head)?;
    let (transport, ws_accept, last_event_id) = if head.upgrade_websocket {
        let accept = ws::check_handshake(head).map_err(|(st, r)| bad(shard, st, r))?;
        (Transport::WebSocket, Some(accept), None)
    } else if head.accept_event_stream {
        if codec == Codec::MsgPack {
            return Err(bad(
                shard,
                400,
                "msgpack is not available over server-sent events (a text-only transport)",
            ));
        }
        let last = match head.last_event_id.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(v) => Some(
                v.parse::<u64>()
                    .map_err(|_| bad(shard, 400, "invalid Last-Event-ID"))?,
            ),
        };
        (Transport::Sse, None, last)
    } else {
        (Transport::Chunked, None, None)
    };
    Ok(Opening {
        at: std::time::Instant::now(),
        uid,
        leftover,
        mode: Mode { transport, codec },
        ws_accept,
        last_event_id,
        allow_origin: allow_origin(shard, head).map(str::to_owned),
    })
}

/// `Access-Control-Allow-Origin` for this request under `--client_allow_origin`.
fn allow_origin<'a>(shard: &'a Shard, head: &'a RequestHead) -> Option<&'a str> {
    cors::allow_origin(&shard.cfg().client_allow_origin, head.origin.as_deref())
}

async fn on_client(port: Rc<ClientPort>, mut stream: TcpStream) {
    let shard = port.router.shard().clone();
    let mut buf = Vec::new();
    let limit = Duration::from_millis(shard.cfg().head_timeout_ms);
    let read = glommio::timer::timeout(limit, async {
        Ok(read_head(&mut stream, &mut buf, MAX_HEAD_BYTES).await)
    })
    .await;
    drop(buf);
    let stats = shard.stats();
    let (head, leftover) = match read {
        Ok(HeadRead::Head(h, rest)) => (h, rest),
        Ok(HeadRead::Bad(e)) => {
            shard.bump(&stats.bad_request);
            return respond(stream, e.status(), e.reason()).await;
        }
        Ok(HeadRead::Closed) | Ok(HeadRead::Io(_)) => return,
        Err(_) => {
            // Half-sent head: give up on it; nothing else waited for it.
            shard.bump(&stats.bad_request);
            return respond(stream, 408, "request timeout").await;
        }
    };
    if head.method == Method::Options && matches!(head.path.as_str(), "/connect" | "/send") {
        return preflight(&shard, stream, &head).await;
    }
    match head.path.as_str() {
        "/connect" => {
            shard.bump(&stats.req_connect);
            connect(port, stream, head, leftover).await
        }
        "/send" => {
            shard.bump(&stats.req_send);
            send(port, stream, head, leftover).await
        }
        "/demo" if matches!(head.method, Method::Get | Method::Head) => {
            shard.bump(&stats.req_demo);
            page(stream, &head, "text/html; charset=utf-8", DEMO).await
        }
        "/ipush.js" if matches!(head.method, Method::Get | Method::Head) => {
            shard.bump(&stats.req_demo);
            page(stream, &head, "text/javascript; charset=utf-8", SDK_JS).await
        }
        _ => {
            shard.bump(&stats.req_other);
            respond_to(stream, head.method == Method::Head, &[], 404, "not found").await
        }
    }
}

/// `OPTIONS /connect` or `/send`: `204` with `Allow`, and for an allowed origin the CORS
/// preflight answer (a browser sends one before a cross-origin request with `Last-Event-ID`
/// or a JSON `Content-Type`).
async fn preflight(shard: &Shard, mut stream: TcpStream, head: &RequestHead) {
    let headers = cors::preflight_headers(allow_origin(shard, head));
    let mut out = Vec::with_capacity(400);
    write_response(&mut out, 204, "", &headers, b"", false);
    let _ = stream.write_all(&out).await;
    super::linger_close(&mut stream).await;
}

/// A static page (HEAD: its head alone), then the end of the connection.
async fn page(mut stream: TcpStream, head: &RequestHead, content_type: &str, body: &str) {
    let mut out = Vec::with_capacity(body.len() + 200);
    write_response(&mut out, 200, content_type, &[], body.as_bytes(), false);
    if head.method == Method::Head {
        strip_body_for_head(&mut out, 0);
    }
    let _ = stream.write_all(&out).await;
    super::linger_close(&mut stream).await;
}

/// `/connect`: a uid of another node is sent there (303, same query); otherwise the stream
/// starts on the uid's core.
async fn connect(
    port: Rc<ClientPort>,
    mut stream: TcpStream,
    head: RequestHead,
    leftover: Vec<u8>,
) {
    if let Some(addr) = remote_owner(&port.router, &head).await {
        let location = format!("http://{addr}/connect?{}", head.query);
        let shard = port.router.shard();
        shard.bump(&shard.stats().redirect);
        let mut out = Vec::with_capacity(256);
        let cors = cors::answer_headers(allow_origin(shard, &head));
        write_redirect(&mut out, &location, &cors);
        let _ = stream.write_all(&out).await;
        return super::linger_close(&mut stream).await;
    }
    match opening(&port, &head, leftover) {
        Ok(o) => start(port.router.clone(), stream, o).await,
        Err((status, reason)) => {
            let shard = port.router.shard();
            let cors = cors::answer_headers(allow_origin(shard, &head));
            respond_to(stream, head.method == Method::Head, &cors, status, &reason).await
        }
    }
}

/// Starts the stream here, or hands the socket to the uid's owner core.
async fn start(router: Rc<Router>, stream: TcpStream, opening: Opening) {
    if router.settled_route(&opening.uid).await == crate::router::Route::Moving {
        return respond(
            stream,
            503,
            "the user's slot is moving between nodes: retry",
        )
        .await;
    }
    let owner = router.owner(&opening.uid).core;
    if owner == router.id() {
        let new = Box::new(NewStream { stream, opening });
        glommio::spawn_local(super::stream::run(router, new)).detach();
        return;
    }
    let shard = router.shard();
    // A duplicate fd crosses to the owner; this core's copy closes.
    // SAFETY: dup of a valid fd we own; the result is owned by the Handoff.
    let fd = unsafe { libc::dup(stream.as_raw_fd()) };
    if fd < 0 {
        shard.bump(&shard.stats().error);
        return respond(stream, 503, "server busy").await;
    }
    drop(stream);
    shard.bump(&shard.stats().handoff);
    router
        .send_to(owner, CoreMsg::Handoff(Handoff::new(fd, opening)))
        .await;
}

/// Starts a stream handed over by another core.
pub fn adopt(router: Rc<Router>, h: Handoff) {
    let (fd, opening) = h.into_parts();
    // SAFETY: the Handoff owned this fd and gave it up to us.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let new = Box::new(NewStream { stream, opening });
    glommio::spawn_local(super::stream::run(router, new)).detach();
}

/// `POST /send?uid=U&password=P[&codec=msgpack]`: one client message in the body, for clients
/// whose stream is one-way (SSE). Acted on by the uid's core like a message on a stream.
async fn send(port: Rc<ClientPort>, mut stream: TcpStream, head: RequestHead, leftover: Vec<u8>) {
    let shard = port.router.shard().clone();
    let res: Result<(), Refusal> = async {
        if head.method != Method::Post {
            return Err(bad(&shard, 405, "method not allowed"));
        }
        let uid = authenticate(&port, &head)?;
        let codec = codec_param(&shard, &head)?;
        let body = read_body(&mut stream, &head, leftover, shard.cfg().max_message_bytes)
            .await
            .map_err(|(st, r)| bad(&shard, st, r))?;
        shard.bump(&shard.stats().recv_number);
        shard.add(&shard.stats().recv_bytes, body.len() as u64);
        let msg = codec::decode(codec, &body).map_err(|e| bad(&shard, 400, e.to_string()))?;
        let key = uid.clone();
        match port
            .router
            .call_user(&key, Request::Client { uid, msg })
            .await
        {
            Answer::Err(e) => Err((500, e)),
            Answer::Unavailable(e) => Err((503, e)),
            _ => Ok(()),
        }
    }
    .await;
    let cors = cors::answer_headers(allow_origin(&shard, &head));
    match res {
        Ok(()) => {
            let mut out = Vec::with_capacity(300);
            write_response(
                &mut out,
                200,
                "text/json; charset=utf-8",
                &cors,
                br#"{"result":"ok"}"#,
                false,
            );
            let _ = stream.write_all(&out).await;
            super::linger_close(&mut stream).await;
        }
        Err((status, reason)) => respond_to(stream, false, &cors, status, &reason).await,
    }
}
