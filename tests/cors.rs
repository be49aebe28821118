//! CORS on the client port (`--client_allow_origin`), against the real server: the 303 to
//! another node, the stream heads, errors and `POST /send` carry `Access-Control-Allow-Origin`
//! (`*` by default, the request's origin when it is listed, nothing when the flag is empty or
//! the origin is not listed), and `OPTIONS` answers the preflight a browser sends before a
//! cross-origin SSE resume (`Last-Event-ID`) or a JSON `POST /send`.

mod common;
mod docs_support;

use common::header_value as header;
use docs_support::{exchange, Kind, Server, Stream};

const PAGE: &str = "https://app.example.com";

fn preflight(srv: &Server, path: &str, origin: &str, headers: &str) -> (u16, String) {
    let req = format!(
        "OPTIONS {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {origin}\r\n\
         Access-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: {headers}\r\n\r\n"
    );
    let (status, head, _) = exchange(srv.client_port, req.as_bytes()).expect("preflight");
    (status, head)
}

fn get(srv: &Server, target: &str, origin: &str) -> (u16, String) {
    let req = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {origin}\r\n\r\n");
    let (status, head, _) = exchange(srv.client_port, req.as_bytes()).expect("request");
    (status, head)
}

#[test]
fn any_origin_by_default_on_every_answer_and_the_preflight() {
    let (a, b) = Server::pair(&[]);
    let b_addr = format!("127.0.0.1:{}", b.client_port);
    let uid = (0..200)
        .map(|i| format!("page{i}"))
        .find(|u| a.shard_of(u) == b_addr)
        .expect("a uid of node n2");

    // The 303 to the other node.
    let (status, head) = get(&a, &format!("/connect?uid={uid}&password=pw"), PAGE);
    assert_eq!(status, 303, "{head}");
    assert_eq!(
        header(&head, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert!(header(&head, "access-control-expose-headers").is_some_and(|v| v.contains("Location")));
    assert_eq!(header(&head, "vary"), None, "`*` does not vary by origin");

    // The stream heads there (chunked and SSE), with the browser's Origin.
    for kind in [Kind::Chunked, Kind::Sse] {
        let st = Stream::open(
            b.client_port,
            &format!("uid={uid}&password=pw"),
            kind,
            &format!("Origin: {PAGE}\r\n"),
        );
        assert_eq!(st.status, 200, "{}", st.head);
        assert_eq!(
            header(&st.head, "access-control-allow-origin").as_deref(),
            Some("*"),
            "{kind:?}: {}",
            st.head
        );
    }

    // Errors a page must be able to read (401 with a JSON reason), and HEAD (the SDK's probe).
    let (status, head) = get(&b, &format!("/connect?uid={uid}&password="), PAGE);
    assert_eq!(status, 401, "{head}");
    assert_eq!(
        header(&head, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    let req = format!(
        "HEAD /connect?uid={uid}&password=pw HTTP/1.1\r\nHost: x\r\nOrigin: {PAGE}\r\n\r\n"
    );
    let (status, head, _) = exchange(a.client_port, req.as_bytes()).expect("head");
    assert_eq!(status, 303, "{head}");
    assert_eq!(
        header(&head, "access-control-allow-origin").as_deref(),
        Some("*")
    );

    // POST /send.
    let body = r#"{"y":0}"#;
    let req = format!(
        "POST /send?uid={uid}&password=pw HTTP/1.1\r\nHost: x\r\nOrigin: {PAGE}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, head, _) = exchange(b.client_port, req.as_bytes()).expect("send");
    assert_eq!(status, 200, "{head}");
    assert_eq!(
        header(&head, "access-control-allow-origin").as_deref(),
        Some("*")
    );

    // The preflight of an SSE resume and of a JSON /send.
    for path in ["/connect?uid=x&password=y", "/send?uid=x&password=y"] {
        let (status, head) = preflight(&a, path, PAGE, "last-event-id, content-type");
        assert_eq!(status, 204, "{head}");
        assert_eq!(
            header(&head, "access-control-allow-origin").as_deref(),
            Some("*")
        );
        let allowed = header(&head, "access-control-allow-headers").unwrap_or_default();
        for h in ["Last-Event-ID", "Content-Type"] {
            assert!(allowed.contains(h), "{h} in {allowed}");
        }
        let methods = header(&head, "access-control-allow-methods").unwrap_or_default();
        assert!(
            methods.contains("GET") && methods.contains("POST"),
            "{methods}"
        );
        assert!(header(&head, "access-control-max-age").is_some());
        assert_eq!(header(&head, "content-length"), None, "204 has no body");
    }
}

#[test]
fn a_listed_origin_is_echoed_and_others_get_no_cors_headers() {
    let flag = format!("--client_allow_origin={PAGE},http://localhost:8080");
    let srv = Server::start(&[&flag]);
    let q = "uid=listed01&password=pw";
    let st = Stream::open(
        srv.client_port,
        q,
        Kind::Sse,
        &format!("Origin: {PAGE}\r\n"),
    );
    assert_eq!(
        header(&st.head, "access-control-allow-origin").as_deref(),
        Some(PAGE)
    );
    assert_eq!(header(&st.head, "vary").as_deref(), Some("Origin"));
    drop(st);

    let st = Stream::open(
        srv.client_port,
        q,
        Kind::Chunked,
        "Origin: https://evil.example\r\n",
    );
    assert_eq!(
        st.status, 200,
        "a stream still opens (CORS is the browser's check)"
    );
    assert_eq!(
        header(&st.head, "access-control-allow-origin"),
        None,
        "{}",
        st.head
    );
    drop(st);
    let st = Stream::open(srv.client_port, q, Kind::Chunked, "");
    assert_eq!(
        header(&st.head, "access-control-allow-origin"),
        None,
        "no Origin, no CORS"
    );
    drop(st);

    let (status, head) = preflight(&srv, "/connect", "http://localhost:8080", "last-event-id");
    assert_eq!(status, 204);
    assert_eq!(
        header(&head, "access-control-allow-origin").as_deref(),
        Some("http://localhost:8080")
    );
    let (status, head) = preflight(&srv, "/connect", "https://evil.example", "last-event-id");
    assert_eq!(status, 204, "{head}");
    assert_eq!(header(&head, "access-control-allow-origin"), None, "{head}");
    assert!(header(&head, "allow").is_some());
}

#[test]
fn an_empty_flag_sends_no_cors_headers() {
    let srv = Server::start(&["--client_allow_origin="]);
    let st = Stream::open(
        srv.client_port,
        "uid=nocors01&password=pw",
        Kind::Sse,
        &format!("Origin: {PAGE}\r\n"),
    );
    assert_eq!(st.status, 200);
    assert_eq!(header(&st.head, "access-control-allow-origin"), None);
    let (status, head) = preflight(&srv, "/connect", PAGE, "last-event-id");
    assert_eq!(status, 204);
    assert_eq!(header(&head, "access-control-allow-origin"), None, "{head}");
}

#[test]
fn a_bad_flag_is_a_startup_error_naming_it() {
    for bad in ["app.example.com", "*,https://a.example"] {
        let out = std::process::Command::new(common::server_bin())
            .args([&format!("--client_allow_origin={bad}"), "--storage=memory"])
            .output()
            .expect("run ipush_server");
        assert!(!out.status.success(), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--client_allow_origin"), "{bad}: {err}");
    }
}
