//! Fuzz target: `livedash_net::fuzzing::http`.

fn main() {
    afl::fuzz!(|data: &[u8]| livedash_net::fuzzing::http(data));
}
