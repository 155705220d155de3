//! Fuzz target: `livedash_net::fuzzing::dashboards`.

fn main() {
    afl::fuzz!(|data: &[u8]| livedash_net::fuzzing::dashboards(data));
}
