//! Fuzz target: `livedash_net::fuzzing::json_ingest`.

fn main() {
    afl::fuzz!(|data: &[u8]| livedash_net::fuzzing::json_ingest(data));
}
