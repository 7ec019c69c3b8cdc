//! Just enough HTTP/1.1 for one local page, with a bound on everything a client sends.
//!
//! ```text
//! request   METHOD SP TARGET SP HTTP/1.x CRLF, headers CRLF, CRLF, a body of Content-Length bytes
//! response  HTTP/1.1 CODE REASON, Content-Type, Content-Length, Connection: close, the body
//! ```
//!
//! One request per connection (`Connection: close`): the page makes a few requests a second at
//! most, and nothing has to be kept between them. The head is read up to [`MAX_HEAD`] bytes; a
//! body must say its length (`Content-Length`, no chunked uploads), and a length above the
//! server's limit is answered with 413 before a byte of it is read or allocated (a client that
//! sent `Expect: 100-continue` is never told to go on). Every read and write has a timeout, so a
//! client that stalls holds its connection for seconds, not forever.
//!
//! Written here rather than taken from a crate: tiny_http 0.12, the small blocking server, drains
//! an unread body on drop into a buffer of the length the client declared (tiny-http PR #290), so
//! one request declaring a huge `Content-Length` can exhaust the memory of the whole server.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The most bytes of request line and headers read before giving up.
pub const MAX_HEAD: usize = 16 * 1024;
/// How long a read or a write may wait for the client.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// After an early answer (413 to a body that was not read), how much of the body is still read
/// and thrown away so that the client sees the answer rather than a reset connection: enough for
/// the common case, a file somewhat over the limit, and never more than this.
const LINGER_BYTES: u64 = 16 << 20;
const LINGER_TIME: Duration = Duration::from_secs(2);

/// A request, its body read.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The path of the target, without the query.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A response: status, content type, body, and any extra headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response { status, content_type, headers: Vec::new(), body: body.into() }
    }

    /// `{"error": message}` with `status`: what every failure of the API looks like.
    pub fn error(status: u16, message: &str) -> Response {
        let body = serde_json::json!({ "error": message }).to_string();
        Response::new(status, JSON, body)
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

pub const JSON: &str = "application/json";

/// The reason phrase of the status codes this server answers with.
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Why a request could not be read: the response that says so, and whether part of its body
/// may still be on its way (to be drained briefly before closing).
#[derive(Debug)]
pub struct Rejected {
    pub response: Response,
    pub body_pending: bool,
}

fn reject(status: u16, message: &str) -> Rejected {
    Rejected { response: Response::error(status, message), body_pending: false }
}

/// Reads one request from `stream`, accepting a body of at most `max_body` bytes.
pub fn read_request(stream: &mut TcpStream, max_body: usize) -> Result<Request, Rejected> {
    let (head, mut rest) = read_head(stream)?;
    let head = std::str::from_utf8(&head).map_err(|_| reject(400, "the request's head is not text"))?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(reject(400, "the request line is not `METHOD TARGET HTTP/1.1`"));
    };
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return Err(reject(505, &format!("{version}: this server speaks HTTP/1.0 and HTTP/1.1")));
    }
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(reject(400, &format!("the header line {line:?} has no colon")));
        };
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let path = target.split(['?', '#']).next().unwrap_or_default().to_string();
    let mut request = Request { method: method.to_string(), path, headers, body: Vec::new() };

    if request.header("Transfer-Encoding").is_some() {
        return Err(reject(411, "send the body with a Content-Length, not in chunks"));
    }
    let lengths: Vec<&str> = request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
        .map(|(_, v)| v.as_str())
        .collect();
    let length = match lengths.as_slice() {
        [] => 0,
        [one] => {
            one.parse::<u64>().map_err(|_| reject(400, &format!("Content-Length {one:?} is not a number")))?
        }
        _ => return Err(reject(400, "the request has several Content-Length headers")),
    };
    if length > max_body as u64 {
        return Err(Rejected {
            response: Response::error(413, &too_large(length, max_body)),
            body_pending: request.header("Expect").is_none(),
        });
    }
    let length = length as usize;
    if request.header("Expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue")) && rest.len() < length
    {
        stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .map_err(|_| reject(400, "the connection closed"))?;
    }
    rest.truncate(length);
    let mut body = rest;
    let have = body.len();
    body.resize(length, 0);
    stream.read_exact(&mut body[have..]).map_err(|e| {
        let status = if is_timeout(&e) { 408 } else { 400 };
        reject(
            status,
            &format!("the body ended after fewer than the {length} bytes its Content-Length announced"),
        )
    })?;
    request.body = body;
    Ok(request)
}

/// `the upload is N bytes; …`: the message of a body over the limit.
pub fn too_large(length: u64, max_body: usize) -> String {
    format!(
        "the upload is {length} bytes; the most this server accepts is {} ({max_body} bytes)",
        human_bytes(max_body as u64)
    )
}

/// `8 MiB`, `512 KiB`, `300 bytes`.
pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.0} KiB", n as f64 / 1024.0),
        n => format!("{n} bytes"),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// The bytes up to the blank line that ends the head, and what was read after it.
fn read_head(stream: &mut TcpStream) -> Result<(Vec<u8>, Vec<u8>), Rejected> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let end = buffer.windows(4).position(|w| w == b"\r\n\r\n");
        if end.unwrap_or(buffer.len()) > MAX_HEAD {
            return Err(reject(431, &format!("the request's head is longer than {MAX_HEAD} bytes")));
        }
        if let Some(end) = end {
            let rest = buffer.split_off(end + 4);
            buffer.truncate(end);
            return Ok((buffer, rest));
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err(reject(400, "the connection closed before the request's head ended")),
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Err(reject(408, "the request's head did not arrive in time")),
            Err(_) => return Err(reject(400, "the connection failed before the request's head ended")),
        }
    }
}

/// Writes `response` and closes the connection; with `body_pending`, first reads and discards a
/// little of a body the client may still be sending, so that it reads the answer instead of a
/// reset connection.
pub fn write_response(stream: &mut TcpStream, response: &Response, body_pending: bool) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(&response.body)?;
    stream.flush()?;
    if body_pending {
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let _ = stream.set_read_timeout(Some(LINGER_TIME));
        let deadline = Instant::now() + LINGER_TIME;
        let (mut left, mut chunk) = (LINGER_BYTES, [0u8; 8192]);
        while left > 0 && Instant::now() < deadline {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n as u64),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(8 << 20), "8 MiB");
        assert_eq!(human_bytes(3 << 19), "1.5 MiB");
        assert_eq!(human_bytes(2048), "2 KiB");
        assert_eq!(human_bytes(12), "12 bytes");
        assert_eq!(
            too_large(9_000_000, 8 << 20),
            "the upload is 9000000 bytes; the most this server accepts is 8 MiB (8388608 bytes)"
        );
    }
}
