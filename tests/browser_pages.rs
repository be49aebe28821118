//! The web pages (admin `GET /` dashboard, client `GET /demo` demo client) in headless Chromium:
//! starts the real server and runs `tests/browser/pages.test.mjs` (node's test runner driving
//! Debian's `/usr/bin/chromium` with playwright-core) against it.
//!
//! Needs Chromium, Node.js and `npm ci` in tests/browser, so it only runs when
//! `IPUSH_BROWSER_TESTS=1` (set by `.ci/run`, which installs them); otherwise it says why it is
//! skipped and passes. Besides the single server it starts a 2-node static cluster, for the
//! JS SDK in a page of node A following a user of node B cross-origin (CORS) and its move. Screenshots go to `$SCREENSHOT_DIR`, by default a directory under
//! target/ (the work tree stays clean; perf/screenshots/ holds the committed ones).
//!
//! `sdk_bundle_is_served` (always run) checks `GET /ipush.js`: the JS SDK's browser bundle the
//! demo page imports, byte for byte the committed `web/ipush.js`.

mod common;
mod docs_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[test]
fn sdk_bundle_is_served() {
    let server = common::Server::start(&[]);
    let addr = server.client_addr();
    let req = format!("GET /ipush.js HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let (status, head, body) = common::raw_exchange(&addr, req.as_bytes(), Duration::from_secs(10));
    assert_eq!(status, 200, "{head}");
    assert_eq!(
        common::header_value(&head, "content-type").as_deref(),
        Some("text/javascript; charset=utf-8")
    );
    let committed = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("web/ipush.js"))
        .expect("web/ipush.js");
    assert_eq!(body, committed, "GET /ipush.js serves web/ipush.js");
    assert!(
        String::from_utf8_lossy(&body).contains("export{"),
        "an ES module"
    );
    // The demo page loads it.
    let req = format!("GET /demo HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let (status, _, page) = common::raw_exchange(&addr, req.as_bytes(), Duration::from_secs(10));
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&page).contains("from '/ipush.js'"));
}

#[test]
fn pages_in_headless_chromium() {
    if std::env::var("IPUSH_BROWSER_TESTS").as_deref() != Ok("1") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but IPUSH_BROWSER_TESTS is not 1: the browser tests must run in CI"
        );
        // Straight to stderr: libtest hides eprintln! of a passing test.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "browser_pages: skipped (set IPUSH_BROWSER_TESTS=1 after installing chromium, nodejs \
             and `npm ci` in tests/browser; .ci/run does all three)"
        );
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = root.join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "IPUSH_BROWSER_TESTS=1 but tests/browser/node_modules/playwright-core is missing: \
         run `(cd tests/browser && npm ci)`"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "IPUSH_BROWSER_TESTS=1 but {chromium} is missing: apt-get install chromium"
    );

    let shots = std::env::var("SCREENSHOT_DIR")
        .unwrap_or_else(|_| format!("{}/screenshots", env!("CARGO_TARGET_TMPDIR")));
    let server = common::Server::start(&["--auth=none"]);
    let client = format!("http://127.0.0.1:{}", server.client_port);
    let admin = format!("http://127.0.0.1:{}", server.admin_port);
    // A 2-node static cluster for the cross-origin tests (a page of node A, a user of node B).
    let (node_a, node_b) = docs_support::Server::pair(&["--auth=none"]);
    let cluster_a = format!("http://127.0.0.1:{}", node_a.client_port);
    let cluster_b = format!("http://127.0.0.1:{}", node_b.client_port);
    let cluster_admin_a = format!("http://127.0.0.1:{}", node_a.admin_port);
    let out = Command::new("node")
        .args([
            "--test",
            "--test-reporter=spec",
            "tests/browser/pages.test.mjs",
        ])
        .current_dir(root)
        .env("CLIENT", &client)
        .env("ADMIN", &admin)
        .env("CLUSTER_A", &cluster_a)
        .env("CLUSTER_B", &cluster_b)
        .env("CLUSTER_ADMIN_A", &cluster_admin_a)
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOT_DIR", &shots)
        .output()
        .expect("run node (is Node.js installed?)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "--- node --test tests/browser/pages.test.mjs (CLIENT={client} ADMIN={admin}, screenshots in {shots}) ---"
    );
    println!("{stdout}");
    if !stderr.trim().is_empty() {
        println!("--- stderr ---\n{stderr}");
    }
    drop(server);
    drop((node_a, node_b));
    assert!(
        out.status.success(),
        "browser tests failed ({}); output above",
        out.status
    );
}
