//! Fuzz target: `livedash_net::fuzzing::websocket`.

fn main() {
    afl::fuzz!(|data: &[u8]| livedash_net::fuzzing::websocket(data));
}
