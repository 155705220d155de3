//! The web UI in a real browser: runs `tests/browser/ui.test.mjs` (Playwright driving
//! Debian's Chromium) against this build of `livedash`, and `cluster.test.mjs` against two
//! nodes in cluster mode on a private broker and Redis.

use std::path::Path;
use std::process::Command;

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
fn web_ui_moves_to_a_live_node_when_its_node_dies() {
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
