//! The chunked body decoder, apart from the socket: it is fed the bytes read so far and
//! says how many it used, so the connection drops them and reads more. Each size line
//! and the trailers are bounded, so nothing is parsed again and again as it grows.

use super::Response;

/// Longest chunk-size line, extensions included.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Longest trailer section.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Most trailer headers.
const MAX_TRAILERS: usize = 64;

/// A chunked body being decoded.
#[derive(Debug)]
pub struct Chunked {
    body: Vec<u8>,
    max: usize,
}

/// How far a feed got.
#[derive(Debug, PartialEq, Eq)]
pub enum Fed {
    /// The body is complete; this many bytes of the feed belonged to it.
    Done(usize),
    /// This many bytes were decoded; more must be read.
    More(usize),
}

impl Chunked {
    /// A decoder for a body of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            body: Vec::new(),
            max,
        }
    }

    /// Decodes the complete chunks at the start of `buf` (what was read and not yet
    /// used). An error is the answer to send before closing.
    pub fn feed(&mut self, buf: &[u8]) -> Result<Fed, Response> {
        let mut pos = 0;
        loop {
            let (size_len, size) = match httparse::parse_chunk_size(&buf[pos..]) {
                Ok(httparse::Status::Complete((len, size))) if len <= MAX_CHUNK_LINE => (len, size),
                Ok(httparse::Status::Complete(_)) => return Err(chunk_line_too_long()),
                Ok(httparse::Status::Partial) if buf.len() - pos > MAX_CHUNK_LINE => {
                    return Err(chunk_line_too_long());
                }
                Ok(httparse::Status::Partial) => return Ok(Fed::More(pos)),
                Err(_) => return Err(bad("malformed chunk size")),
            };
            let data = pos + size_len;
            if size == 0 {
                // Last chunk: optional trailers, then an empty line.
                let mut headers = [httparse::EMPTY_HEADER; MAX_TRAILERS];
                return match httparse::parse_headers(&buf[data..], &mut headers) {
                    Ok(httparse::Status::Complete((n, _))) if n <= MAX_TRAILER_BYTES => {
                        Ok(Fed::Done(data + n))
                    }
                    Ok(httparse::Status::Complete(_)) => Err(trailers_too_large()),
                    Ok(httparse::Status::Partial) if buf.len() - data > MAX_TRAILER_BYTES => {
                        Err(trailers_too_large())
                    }
                    Ok(httparse::Status::Partial) => Ok(Fed::More(pos)),
                    Err(httparse::Error::TooManyHeaders) => Err(trailers_too_large()),
                    Err(_) => Err(bad("malformed chunked trailer")),
                };
            }
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            if size > self.max.saturating_sub(self.body.len()) {
                return Err(Response::error(
                    413,
                    &format!("chunked body is over the limit of {} bytes", self.max),
                ));
            }
            let Some(end) = data.checked_add(size).filter(|&e| e + 2 <= buf.len()) else {
                return Ok(Fed::More(pos));
            };
            if &buf[end..end + 2] != b"\r\n" {
                return Err(bad("chunk data not followed by CRLF"));
            }
            self.body.extend_from_slice(&buf[data..end]);
            pos = end + 2;
        }
    }

    /// The decoded body.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }
}

pub fn chunk_line_too_long() -> Response {
    bad("chunk size line (with its extensions) longer than 4096 bytes")
}

fn trailers_too_large() -> Response {
    Response::error(431, "chunked trailers larger than 16 KiB or 64 headers")
}

fn bad(reason: &str) -> Response {
    Response::error(400, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(input: &[u8], piece: usize, max: usize) -> Result<Vec<u8>, u16> {
        let mut dec = Chunked::new(max);
        let mut buf = Vec::new();
        for part in input.chunks(piece.max(1)) {
            buf.extend_from_slice(part);
            match dec.feed(&buf).map_err(|r| r.status)? {
                Fed::Done(n) => {
                    assert!(n <= buf.len());
                    return Ok(dec.into_body());
                }
                Fed::More(n) => {
                    buf.drain(..n);
                }
            }
        }
        Err(0)
    }

    #[test]
    fn decodes_whole_and_byte_by_byte() {
        let input = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        for piece in [1, 2, 3, 7, input.len()] {
            assert_eq!(
                decode_in_pieces(input, piece, 1024).unwrap(),
                b"hello world",
                "{piece}"
            );
        }
    }

    #[test]
    fn done_counts_only_the_body() {
        let mut dec = Chunked::new(64);
        let input = b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1";
        assert_eq!(dec.feed(input).unwrap(), Fed::Done(13));
    }

    #[test]
    fn limits_answer_with_their_status() {
        assert_eq!(decode_in_pieces(b"a\r\n0123456789\r\n", 64, 4), Err(413));
        let long_ext = [b"1;".as_slice(), &[b'x'; 5000], b"\r\n"].concat();
        assert_eq!(decode_in_pieces(&long_ext, 512, 64), Err(400));
        let trailers = [b"0\r\n".as_slice(), &b"a: b\r\n".repeat(4000)].concat();
        assert_eq!(decode_in_pieces(&trailers, 1024, 64), Err(431));
        assert_eq!(decode_in_pieces(b"zz\r\n", 64, 64), Err(400));
        assert_eq!(decode_in_pieces(b"1\r\nabc\r\n", 64, 64), Err(400));
    }
}
