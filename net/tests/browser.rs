//! The web UI in a real browser: runs `tests/browser/ui.test.mjs` (Playwright driving
//! Debian's Chromium) against this build of `livedash`.

use std::path::Path;
use std::process::Command;

#[test]
fn web_ui_in_chromium() {
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
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui.png");
    let status = Command::new("node")
        .arg(dir.join("ui.test.mjs"))
        .env("NODE_BIN", env!("CARGO_BIN_EXE_livedash"))
        .env("SCREENSHOT", &screenshot)
        .status()
        .unwrap_or_else(|e| panic!("cannot run node ({e}): install Node.js 20 or later"));
    assert!(status.success(), "the browser test failed ({status})");
}
