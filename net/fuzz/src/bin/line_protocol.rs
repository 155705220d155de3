//! Fuzz target: `livedash_net::fuzzing::line_protocol`.

fn main() {
    afl::fuzz!(|data: &[u8]| livedash_net::fuzzing::line_protocol(data));
}
