//! `--max_connections`: beyond it /connect answers 503 and nothing else changes.
mod common;
use common::*;
use serde_json::json;

#[test]
fn connects_over_the_limit_get_503() {
    let s = Server::start(&["--cores=1", "--max_connections=2"]);
    let mut a = s.connect("a");
    let _b = s.connect("b");
    let c = Client::connect(&s.client_addr(), "c", "pw").unwrap();
    assert_eq!(c.status, 503, "{}", c.head);
    // A reconnect of a connected uid replaces its stream instead of counting twice.
    let mut a2 = s.connect("a");
    assert_eq!(a2.status, 200);
    assert!(a.ends_within(std::time::Duration::from_secs(5)));
    s.post("/pub?to=a&from=op", "still served");
    assert_eq!(a2.recv()["b"], "still served");
    assert_eq!(s.stats()["user"]["user_number"], json!(2));
}
