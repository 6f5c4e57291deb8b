//! HTTP/1.1 on one connection, as much of it as a scrape target needs:
//! request heads read with httparse, responses with a Content-Length,
//! keep-alive (Prometheus keeps its connection to a target open between
//! scrapes), HEAD, and nothing else. A request with a body (scrapes have
//! none) is answered and its connection closed, without reading the body.
//!
//! The stream may be a TCP socket or TLS over one: what this module reads and
//! writes is the same. Timeouts are the TCP socket's own (see [`Socket`]).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime};

/// A request head larger than this is refused (431); Prometheus sends a few
/// hundred bytes.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
/// How long a kept-alive connection may wait for its next request: longer
/// than any usual scrape interval, so a scraper's connection stays open.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How long a request head (or a TLS handshake) may take to arrive once it
/// has begun, and a response to be taken by the client.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A request, as the handler sees it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    headers: Vec<(String, String)>,
}

impl Request {
    /// The value of header `name` (the first of that name, compared without
    /// case), or "" when there is none.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map_or("", |(_, value)| value.as_str())
    }
}

/// A response: the handler's answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body,
        }
    }

    /// Plain text, as bpfsnap's error answers are.
    pub fn text(status: u16, body: String) -> Response {
        Response::new(status, "text/plain; charset=utf-8", body.into_bytes())
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The value of header `name`, if set (compared without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// The TCP socket under a connection's stream: its timeouts bound every read
/// and write, TLS or not.
pub trait Socket {
    fn socket(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

/// Told when a connection's request starts and ends, so that a server that
/// stops can close idle connections at once and let busy ones finish.
pub trait Activity {
    /// A whole request head was read; false: drop it and close (stopping).
    fn busy(&self) -> bool;
    /// Its response was written; false: close the connection (stopping).
    fn idle(&self) -> bool;
}

/// Answers the requests of one connection with `handler` until the client
/// closes it, asks to, errs, idles too long, or `activity` says to stop.
pub fn serve_connection<S, H>(stream: &mut S, activity: &dyn Activity, handler: H)
where
    S: Read + Write + Socket,
    H: Fn(&Request) -> Response,
{
    let mut buffer = Vec::new();
    loop {
        let (request, keep_alive) = match read_request(stream, &mut buffer) {
            Ok(Incoming::Request {
                request,
                keep_alive,
            }) => (request, keep_alive),
            Ok(Incoming::Closed) | Err(_) => return,
            Ok(Incoming::Refused(response)) => {
                let _ = write_response(stream, &response, false, false);
                return;
            }
        };
        if !activity.busy() {
            return;
        }
        let response = handler(&request);
        let head_only = request.method == "HEAD";
        let written = write_response(stream, &response, keep_alive, head_only);
        if !activity.idle() || !keep_alive || written.is_err() {
            return;
        }
    }
}

/// What came in on a connection.
enum Incoming {
    Request {
        request: Request,
        /// Whether the connection may carry another request after this one.
        keep_alive: bool,
    },
    /// The client closed the connection between requests.
    Closed,
    /// A request that is refused with this answer, and the connection closed.
    Refused(Response),
}

/// Reads the next request head; `buffer` keeps bytes read past it (a
/// pipelined request) for the next call.
fn read_request<S: Read + Socket>(stream: &mut S, buffer: &mut Vec<u8>) -> io::Result<Incoming> {
    let mut timeout = if buffer.is_empty() {
        IDLE_TIMEOUT
    } else {
        IO_TIMEOUT
    };
    loop {
        match parse_head(buffer) {
            Parsed::Complete(request, length, keep_alive) => {
                buffer.drain(..length);
                return Ok(Incoming::Request {
                    request,
                    keep_alive,
                });
            }
            Parsed::Refused(response) => return Ok(Incoming::Refused(response)),
            Parsed::Partial if buffer.len() >= MAX_HEAD => {
                let body = "431 request header fields too large\n".to_string();
                return Ok(Incoming::Refused(Response::text(431, body)));
            }
            Parsed::Partial => {}
        }
        stream.socket().set_read_timeout(Some(timeout))?;
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return match buffer.is_empty() {
                true => Ok(Incoming::Closed),
                false => Err(io::ErrorKind::UnexpectedEof.into()),
            };
        }
        buffer.extend_from_slice(&chunk[..read]);
        timeout = IO_TIMEOUT;
    }
}

/// What `parse_head` made of the bytes so far.
enum Parsed {
    /// The request, the length of its head and whether to keep the
    /// connection open after answering it.
    Complete(Request, usize, bool),
    Partial,
    Refused(Response),
}

fn parse_head(bytes: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let length = match head.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            let body = "431 request header fields too large\n".to_string();
            return Parsed::Refused(Response::text(431, body));
        }
        Err(httparse::Error::Version) => {
            let body = "505 HTTP version not supported: use HTTP/1.1\n".to_string();
            return Parsed::Refused(Response::text(505, body));
        }
        Err(err) => {
            return Parsed::Refused(Response::text(400, format!("400 bad request: {err}\n")))
        }
    };
    let (Some(method), Some(target), Some(version)) = (head.method, head.path, head.version) else {
        return Parsed::Refused(Response::text(400, "400 bad request\n".into()));
    };
    let headers: Vec<(String, String)> = head
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let request = Request {
        method: method.to_string(),
        path: target
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .to_string(),
        headers,
    };
    let keep_alive = keeps_alive(version, request.header("Connection")) && !has_body(&request);
    Parsed::Complete(request, length, keep_alive)
}

/// Whether the connection stays open after this request (RFC 9112 9.3):
/// HTTP/1.1 unless the client says `close`, HTTP/1.0 only if it says
/// `keep-alive`.
fn keeps_alive(version: u8, connection: &str) -> bool {
    let says = |option: &str| {
        connection
            .split(',')
            .any(|token| token.trim().eq_ignore_ascii_case(option))
    };
    match version {
        1 => !says("close"),
        _ => says("keep-alive"),
    }
}

/// Whether a body follows the head: it is not read, so the connection cannot
/// carry another request.
fn has_body(request: &Request) -> bool {
    let length = request.header("Content-Length").trim();
    !request.header("Transfer-Encoding").is_empty() || !(length.is_empty() || length == "0")
}

fn write_response<S: Write + Socket>(
    stream: &mut S,
    response: &Response,
    keep_alive: bool,
    head_only: bool,
) -> io::Result<()> {
    stream.socket().set_write_timeout(Some(IO_TIMEOUT))?;
    let head = response_head(response, keep_alive, SystemTime::now());
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(&response.body)?;
    }
    stream.flush()
}

fn response_head(response: &Response, keep_alive: bool, now: SystemTime) -> String {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nDate: {}\r\nContent-Length: {}\r\n",
        response.status,
        reason(response.status),
        httpdate::fmt_http_date(now),
        response.body.len()
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    head
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(bytes: &[u8]) -> (Request, usize, bool) {
        match parse_head(bytes) {
            Parsed::Complete(request, length, keep_alive) => (request, length, keep_alive),
            Parsed::Partial => panic!("partial: {:?}", String::from_utf8_lossy(bytes)),
            Parsed::Refused(r) => {
                panic!("refused {}: {:?}", r.status, String::from_utf8_lossy(bytes))
            }
        }
    }

    #[test]
    fn heads_are_parsed_with_their_connection_options() {
        for (head, path, keep_alive) in [
            ("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "/metrics", true),
            ("GET /metrics?a=b HTTP/1.1\r\n\r\n", "/metrics", true),
            ("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", "/", false),
            (
                "GET / HTTP/1.1\r\nConnection: TE, Close\r\n\r\n",
                "/",
                false,
            ),
            ("GET / HTTP/1.0\r\n\r\n", "/", false),
            (
                "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                "/",
                true,
            ),
            // A body is not read: the connection cannot go on.
            ("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n", "/", false),
            ("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "/", true),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                "/",
                false,
            ),
        ] {
            let (request, length, keeps) = complete(head.as_bytes());
            assert_eq!(request.path, path, "{head:?}");
            assert_eq!(length, head.len(), "{head:?}");
            assert_eq!(keeps, keep_alive, "{head:?}");
        }
        let (request, ..) = complete(b"GET / HTTP/1.1\r\naccept-ENCODING: gzip\r\n\r\n");
        assert_eq!(request.header("Accept-Encoding"), "gzip");
        assert_eq!(request.header("Accept"), "");
    }

    #[test]
    fn partial_and_bad_heads() {
        assert!(matches!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHo"),
            Parsed::Partial
        ));
        assert!(matches!(parse_head(b""), Parsed::Partial));
        for (head, status) in [
            (&b"GET /metrics HTTP/2.0\r\n\r\n"[..], 505),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
            (b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n", 400),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
        ] {
            match parse_head(head) {
                Parsed::Refused(response) => assert_eq!(response.status, status, "{head:?}"),
                _ => panic!("not refused: {head:?}"),
            }
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
        match parse_head(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()) {
            Parsed::Refused(response) => assert_eq!(response.status, 431),
            _ => panic!("too many headers accepted"),
        }
    }

    #[test]
    fn response_heads_say_length_date_and_close() {
        let response = Response::text(503, "busy\n".into()).with_header("Retry-After", "1");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784111777);
        assert_eq!(
            response_head(&response, false, now),
            "HTTP/1.1 503 Service Unavailable\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Content-Length: 5\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Retry-After: 1\r\nConnection: close\r\n\r\n"
        );
        assert!(!response_head(&response, true, now).contains("Connection"));
    }
}
