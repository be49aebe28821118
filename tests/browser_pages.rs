//! The web pages (admin `GET /` dashboard, client `GET /demo` demo client) in headless Chromium:
//! starts the real server and runs `tests/browser/pages.test.mjs` (node's test runner driving
//! Debian's `/usr/bin/chromium` with playwright-core) against it.
//!
//! Needs Chromium, Node.js and `npm ci` in tests/browser, so it only runs when
//! `IPUSH_BROWSER_TESTS=1` (set by `.ci/run`, which installs them); otherwise it says why it is
//! skipped and passes. Screenshots go to perf/screenshots/.

mod common;

use std::path::Path;
use std::process::Command;

#[test]
fn pages_in_headless_chromium() {
    if std::env::var("IPUSH_BROWSER_TESTS").as_deref() != Ok("1") {
        eprintln!(
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

    let server = common::Server::start(&["--auth=none"]);
    let client = format!("http://127.0.0.1:{}", server.client_port);
    let admin = format!("http://127.0.0.1:{}", server.admin_port);
    let out = Command::new("node")
        .args([
            "--test",
            "--test-reporter=spec",
            "tests/browser/pages.test.mjs",
        ])
        .current_dir(root)
        .env("CLIENT", &client)
        .env("ADMIN", &admin)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node (is Node.js installed?)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("--- node --test tests/browser/pages.test.mjs (CLIENT={client} ADMIN={admin}) ---");
    println!("{stdout}");
    if !stderr.trim().is_empty() {
        println!("--- stderr ---\n{stderr}");
    }
    drop(server);
    assert!(
        out.status.success(),
        "browser tests failed ({}); output above",
        out.status
    );
}
