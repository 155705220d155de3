//! The web UI in a real browser: runs `tests/browser/ui.test.mjs` (Playwright driving
//! Debian's Chromium) against this build of `livedash`, `charts.test.mjs` (the charts,
//! kiosk mode, export and import), and `cluster.test.mjs` against two nodes in cluster
//! mode on a private broker and Redis.

use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The tests that wait for what the page shows take turns; the memory run (which only
/// reads memory) goes beside them.
static TIMED: Mutex<()> = Mutex::new(());

fn timed() -> MutexGuard<'static, ()> {
    TIMED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The browser test's directory, once Chromium and Playwright are there.
fn browser_dir() -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "Chromium is missing: install it with `apt-get install -y chromium` (bash .ci/run does)"
    );
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is missing: run `npm ci` in {} (bash .ci/run does)",
        dir.display()
    );
    dir
}

#[test]
fn web_ui_in_chromium() {
    let _turn = timed();
    let dir = browser_dir();
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui.png");
    let status = Command::new("node")
        .arg(dir.join("ui.test.mjs"))
        .env("NODE_BIN", env!("CARGO_BIN_EXE_livedash"))
        .env("SCREENSHOT", &screenshot)
        .status()
        .unwrap_or_else(|e| panic!("cannot run node ({e}): install Node.js 20 or later"));
    assert!(status.success(), "the browser test failed ({status})");
}

#[test]
fn charts_legend_hover_heatmap_kiosk_and_export_in_chromium() {
    let _turn = timed();
    let dir = browser_dir();
    let status = Command::new("node")
        .arg(dir.join("charts.test.mjs"))
        .env("NODE_BIN", env!("CARGO_BIN_EXE_livedash"))
        .status()
        .unwrap_or_else(|e| panic!("cannot run node ({e}): install Node.js 20 or later"));
    assert!(
        status.success(),
        "the charts browser test failed ({status})"
    );
}

/// A kiosk page's memory stays flat once its charts are full: the short form of the hour
/// at 1 update/s (10 updates/s, so the same history turns over in a tenth of the time).
#[test]
fn a_kiosk_page_holds_no_more_memory_after_its_charts_filled() {
    let dir = browser_dir();
    let status = Command::new("node")
        .arg(dir.join("kiosk_memory.mjs"))
        .args([
            "--rate", "10", "--early", "75", "--late", "150", "--every", "25",
        ])
        .args(["--churn", "6", "--check", "1.10"])
        .env("NODE_BIN", env!("CARGO_BIN_EXE_livedash"))
        .status()
        .unwrap_or_else(|e| panic!("cannot run node ({e}): install Node.js 20 or later"));
    assert!(status.success(), "the kiosk page's memory grew ({status})");
}

#[test]
fn web_ui_moves_to_a_live_node_when_its_node_dies() {
    let _turn = timed();
    let dir = browser_dir();
    let broker = livedash_loadgen::broker::Broker::start();
    broker.create_topic("ui.events", 4);
    let redis = livedash_loadgen::redis::RedisServer::start();
    let status = Command::new("node")
        .arg(dir.join("cluster.test.mjs"))
        .env("NODE_BIN", env!("CARGO_BIN_EXE_livedash"))
        .env("BROKERS", broker.addr())
        .env("TOPIC", "ui.events")
        .env("REDIS", redis.url())
        .status()
        .unwrap_or_else(|e| panic!("cannot run node ({e}): install Node.js 20 or later"));
    assert!(
        status.success(),
        "the cluster browser test failed ({status})"
    );
}
