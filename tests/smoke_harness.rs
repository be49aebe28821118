mod common;
use common::*;

#[test]
fn server_starts_and_answers_health() {
    let s = Server::start(&[]);
    let (st, v) = s.get("/health");
    assert_eq!(st, 200);
    assert_eq!(v["result"]["status"], "ok");
    let mut c = s.connect("user001");
    assert_eq!(c.status, 200);
    c.send(r#"{"y":0}"#);
    assert_eq!(c.recv(), serde_json::json!({"y":0}));
}
