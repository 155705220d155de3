//! The fuzz targets by name, with where their inputs live. The binaries in `src/bin` run
//! them under AFL (`cargo afl build --features afl`, then `cargo afl fuzz`, as
//! `net/fuzz/run` does); the tests run every seed, every kept crash input, and a short
//! run of random mutations of the seeds.

use std::path::{Path, PathBuf};

/// A fuzz target: a name and the function that takes the bytes.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("http", livedash_net::fuzzing::http),
    ("json_ingest", livedash_net::fuzzing::json_ingest),
    ("line_protocol", livedash_net::fuzzing::line_protocol),
    ("websocket", livedash_net::fuzzing::websocket),
    ("dashboards", livedash_net::fuzzing::dashboards),
];

fn here() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The seed inputs of `target` (the fuzzer's starting corpus).
pub fn seeds(target: &str) -> PathBuf {
    here().join("seeds").join(target)
}

/// Inputs that once crashed or hung `target`, kept as regression tests.
pub fn regressions(target: &str) -> PathBuf {
    here().join("regressions").join(target)
}

/// Every file in `dir`, with its name (none when the directory does not exist).
pub fn inputs(dir: &Path) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.is_file() {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            files.push((name.into_owned(), std::fs::read(&path)?));
        }
    }
    files.sort();
    Ok(files)
}
