//! What the handler sees of a request and gives back, and how both cross to
//! and from hyper's types. hyper reads the request heads and writes the
//! responses (see [`super::server`]); the handler only ever sees the
//! method, the path and the headers (scrapes have no body, and none is
//! read).

use bytes::Bytes;
use http_body_util::Full;

/// A request, as the handler sees it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    headers: Vec<(String, String)>,
}

impl Request {
    /// The method, path and headers of hyper's request (header values that
    /// are not UTF-8 decoded lossily: none that matters here can be).
    pub fn from_parts(parts: &hyper::http::request::Parts) -> Request {
        let headers = parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        Request {
            method: parts.method.as_str().to_string(),
            path: parts.uri.path().to_string(),
            headers,
        }
    }

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

    /// hyper's response: hyper adds Date and Content-Length, and leaves the
    /// body out of an answer to HEAD. A status or header hyper refuses (a
    /// web config header that is not a valid field) is a 500 naming it.
    pub fn into_hyper(self) -> hyper::Response<Full<Bytes>> {
        let mut builder = hyper::Response::builder().status(self.status);
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        match builder.body(Full::new(Bytes::from(self.body))) {
            Ok(response) => response,
            Err(err) => {
                let body = format!("500 the response could not be written: {err}\n");
                let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
                *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                response
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_keep_the_path_without_the_query_and_headers_without_case() {
        let (parts, ()) = hyper::Request::builder()
            .uri("/metrics?a=b")
            .header("accept-ENCODING", "gzip")
            .body(())
            .unwrap()
            .into_parts();
        let request = Request::from_parts(&parts);
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/metrics");
        assert_eq!(request.header("Accept-Encoding"), "gzip");
        assert_eq!(request.header("Accept"), "");
    }

    #[test]
    fn responses_keep_their_headers_and_a_bad_one_is_a_500() {
        let response = Response::text(503, "busy\n".into())
            .with_header("Retry-After", "1")
            .into_hyper();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["Retry-After"], "1");
        assert_eq!(
            response.headers()["Content-Type"],
            "text/plain; charset=utf-8"
        );
        let bad = Response::text(200, "x".into())
            .with_header("X-Bad", "a\nb")
            .into_hyper();
        assert_eq!(bad.status(), 500);
    }
}
