//! `conf/ipush.service` is a valid systemd unit (`systemd-analyze verify`) with the limits and
//! stop behaviour the server needs. Skipped (saying so) without systemd-analyze, except under
//! CI=true, where that is a failure.
mod common;
use std::path::Path;
use std::process::Command;

const UNIT: &str = include_str!("../conf/ipush.service");

fn have_systemd_analyze() -> bool {
    Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `systemd-analyze verify` of `text` installed as `ipush.service` in a fresh directory, with
/// ExecStart pointing at the binary under test; (success, output).
fn verify(text: &str) -> (bool, String) {
    let dir =
        std::env::temp_dir().join(format!("ipush-unit-{}-{}", std::process::id(), text.len()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bin = std::fs::canonicalize(common::server_bin()).expect("the server binary");
    let text = text.replace("/usr/local/bin/ipush_server", bin.to_str().unwrap());
    let path = dir.join("ipush.service");
    std::fs::write(&path, text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The value of `Key=` in the unit (the last one wins, as in systemd).
fn setting<'a>(key: &str) -> Option<&'a str> {
    UNIT.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn unit_has_the_limits_and_stop_behaviour() {
    assert_eq!(setting("LimitNOFILE"), Some("1048576"));
    assert_eq!(setting("LimitMEMLOCK"), Some("infinity"));
    assert_eq!(setting("KillSignal"), Some("SIGTERM"));
    assert_eq!(setting("Restart"), Some("on-failure"));
    assert_eq!(setting("User"), Some("ipush"));
    assert_eq!(setting("StateDirectory"), Some("ipush"));
    assert_eq!(setting("WorkingDirectory"), Some("/var/lib/ipush"));
    assert_eq!(setting("ExecReload"), None, "the server has no reload");
    let exec = setting("ExecStart").expect("ExecStart");
    assert!(exec.contains("--flagfile="), "{exec}");
    assert!(exec.contains("--data_dir=/var/lib/ipush"), "{exec}");
    assert!(Path::new(exec.split(' ').next().unwrap()).is_absolute());
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    if !have_systemd_analyze() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "systemd-analyze is missing under CI=true (install the systemd package)"
        );
        eprintln!("skipped: systemd-analyze not found");
        return;
    }
    // verify exits 0 on settings it ignores (unknown keys, bad values) but reports them
    // against the file: our unit must draw no remark at all.
    let remarks = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| l.contains("ipush.service"))
            .map(str::to_string)
            .collect()
    };
    let (ok, out) = verify(UNIT);
    assert!(
        ok,
        "systemd-analyze verify refused conf/ipush.service:\n{out}"
    );
    assert_eq!(remarks(&out), Vec::<String>::new(), "{out}");
    // The check can fail: a misspelt directive and a bad limit are reported.
    let broken = UNIT.replace("LimitNOFILE=1048576", "LimitNOFILE=lots\nKilSignal=SIGTERM");
    let (_, out) = verify(&broken);
    let r = remarks(&out);
    assert!(r.iter().any(|l| l.contains("KilSignal")), "{out}");
    assert!(r.iter().any(|l| l.contains("lots")), "{out}");
}
