//! Responses: a status, a JSON (or other) body, and the bytes put on the wire.

use bytes::Bytes;
use serde::Serialize;

/// A response ready to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Shared, not copied: a body many connections send (the dashboards list, an asset)
    /// is held once however slowly they read it.
    pub body: Bytes,
    /// Close the connection after this response.
    pub close: bool,
}

impl Response {
    /// A JSON body. Serialising our own types cannot fail; if it ever did, the client gets a
    /// 500 with a reason instead of a broken body.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self {
                status,
                content_type: "application/json",
                body: body.into(),
                close: false,
            },
            Err(e) => Self::error(500, &format!("cannot encode the response: {e}")),
        }
    }

    /// `{"error": reason}` with `status`.
    pub fn error(status: u16, reason: &str) -> Self {
        let body = serde_json::json!({ "error": reason }).to_string().into();
        Self {
            status,
            content_type: "application/json",
            body,
            close: false,
        }
    }

    /// A static file.
    pub fn asset(content_type: &'static str, body: &'static str) -> Self {
        Self {
            status: 200,
            content_type,
            body: Bytes::from_static(body.as_bytes()),
            close: false,
        }
    }

    /// A body of any other type.
    pub fn bytes(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            content_type,
            body: body.into(),
            close: false,
        }
    }

    /// A status with no body (204 and the like).
    pub fn empty(status: u16) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: Bytes::new(),
            close: false,
        }
    }

    /// This response, and then close the connection.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// Appends the status line, headers and body to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        self.write_head(out);
        if self.status != 204 {
            out.extend_from_slice(&self.body);
        }
    }

    /// Appends the status line and headers to `out`.
    pub fn write_head(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let _ = write!(out, "HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        if self.status != 204 {
            let _ = write!(
                out,
                "content-type: {}\r\ncontent-length: {}\r\n",
                self.content_type,
                self.body.len()
            );
        }
        if self.close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form() {
        let mut out = Vec::new();
        Response::error(404, "no dashboard")
            .closing()
            .write_to(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 24\r\n\
             connection: close\r\n\r\n{\"error\":\"no dashboard\"}"
        );
        let mut out = Vec::new();
        Response::empty(204).write_to(&mut out);
        assert_eq!(out, b"HTTP/1.1 204 No Content\r\n\r\n");
    }
}
