//! The `livedash` binary. The serving node (thread-per-core runtime, HTTP API, WebSocket
//! stream, web UI) is not built yet; until it is, the binary says so plainly and exits
//! with status 2 rather than pretending to serve.

use anyhow::bail;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--version" || a == "-V") {
        println!("livedash {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    bail!(
        "livedash {}: the serving node (HTTP ingest, dashboards API, WebSocket, web UI) is not \
         built yet; this release contains the aggregation engine and its benchmarks only \
         (see README.md, section Status)",
        env!("CARGO_PKG_VERSION")
    )
}
