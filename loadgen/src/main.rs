//! The `loadgen` binary. Load generation needs a serving node to aim at, which is not
//! built yet; until then the binary says so and exits with status 2.

use anyhow::bail;

fn main() -> anyhow::Result<()> {
    bail!(
        "loadgen {}: not built yet; it arrives after the serving node (see README.md, section Status)",
        env!("CARGO_PKG_VERSION")
    )
}
