//! The server: hyper's HTTP/1.1 on a tokio runtime of one thread, which
//! accepts on every listening socket and carries each connection as a task
//! (a few kilobytes, not a thread), so that idle or half-open connections,
//! however many, cannot hold up a scrape. The handler runs on tokio's
//! blocking threads (a scrape can take seconds, bcrypt tens of
//! milliseconds), at most [`Limits::handlers`] at once.
//!
//! A connection must send its first byte within the header timeout of
//! connecting, then a whole request head within the header timeout (hyper's
//! `header_read_timeout`, as Go's ReadHeaderTimeout, which also bounds an
//! idle kept-alive connection after each response), else it is closed; over
//! TLS the handshake must end within the header timeout of connecting. A
//! head larger than [`MAX_HEAD`] is answered 431.
//!
//! Stopping refuses new connections (the listening sockets are closed),
//! closes idle ones and waits for the requests in flight to be answered.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

use super::http::{Request, Response};
use crate::log::Log;

/// What answers each request.
pub type Handler = dyn Fn(&Request) -> Response + Send + Sync;

/// Each connection's TLS configuration, asked for as the connection comes
/// (it may have been read again since the last); an error refuses the
/// connection. No `Tls` at all: plain HTTP.
pub type Tls = Arc<dyn Fn() -> Result<Arc<rustls::ServerConfig>, String> + Send + Sync>;

/// What Go's http.Server answers a plain HTTP request sent to its TLS port,
/// for the same mistake to read the same.
const PLAIN_HTTP_TO_TLS: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// A request head larger than this is answered 431 (Prometheus sends a few
/// hundred bytes). It is also the most a connection buffers of a head, so
/// an idle connection holds hyper's first 8 KiB buffer and no more.
pub const MAX_HEAD: usize = 16 * 1024;

/// How long to wait before accepting again after an error (out of
/// descriptors: wait for some to be freed rather than spin, as Go's
/// http.Server does).
const ACCEPT_RETRY: Duration = Duration::from_millis(500);

/// The server's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A connection's time to send a whole request head (and to finish its
    /// TLS handshake), from connecting or from its previous response.
    pub header_timeout: Duration,
    /// Requests answered at once (on blocking threads); more wait their
    /// turn. The scrape handler's own in-flight limit, lower, answers 503.
    pub handlers: usize,
    /// How long stopping waits for a connection to take its last response.
    pub stop_grace: Duration,
}

pub struct Server {
    stop: watch::Sender<bool>,
    thread: JoinHandle<()>,
}

impl Server {
    /// Starts accepting on every listener, on a thread of its own.
    pub fn start(
        listeners: Vec<std::net::TcpListener>,
        limits: Limits,
        handler: Arc<Handler>,
        tls: Option<Tls>,
        log: Log,
    ) -> Result<Server> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(limits.handlers.max(1))
            .thread_name("http")
            .build()
            .map_err(|err| anyhow!("cannot start the HTTP server: {err}"))?;
        let listeners = {
            let _entered = runtime.enter();
            listeners
                .into_iter()
                .map(listener_for_tokio)
                .collect::<Result<Vec<_>>>()?
        };
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(MAX_HEAD)
            // Header names as Go writes them (Content-Type, Www-Authenticate).
            .title_case_headers(true);
        let shared = Arc::new(Shared {
            http,
            handler,
            tls,
            limits,
            log,
        });
        let (stop, stopping) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || runtime.block_on(run(listeners, shared, stopping)))
            .map_err(|err| anyhow!("cannot start the HTTP server's thread: {err}"))?;
        Ok(Server { stop, thread })
    }

    /// Refuses new connections, closes the idle ones and returns once every
    /// request in flight has been answered.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.thread.join();
    }
}

fn listener_for_tokio(listener: std::net::TcpListener) -> Result<TcpListener> {
    let address = listener
        .local_addr()
        .map(|address| address.to_string())
        .unwrap_or_else(|_| "a socket".into());
    listener
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(listener))
        .map_err(|err| anyhow!("cannot listen on {address}: {err}"))
}

/// What every connection shares.
struct Shared {
    http: http1::Builder,
    handler: Arc<Handler>,
    tls: Option<Tls>,
    limits: Limits,
    log: Log,
}

/// Accepts on every listener until stopped, then waits for every
/// connection to close: each holds a clone of `open`, and the receiver sees
/// the end once the last is dropped.
async fn run(listeners: Vec<TcpListener>, shared: Arc<Shared>, stopping: watch::Receiver<bool>) {
    let (open, mut closed) = mpsc::channel::<()>(1);
    for listener in listeners {
        tokio::spawn(accept(
            listener,
            shared.clone(),
            stopping.clone(),
            open.clone(),
        ));
    }
    drop(open);
    let _ = closed.recv().await;
}

/// Resolves once the server is stopping.
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    // An error: the server is gone, which is stopping as well.
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// One listening socket's accept loop; the socket is closed when it ends.
async fn accept(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stopping: watch::Receiver<bool>,
    open: mpsc::Sender<()>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut stopping) => return,
        };
        match accepted {
            Ok((socket, peer)) => {
                let connection = connection(socket, peer, shared.clone(), stopping.clone());
                let open = open.clone();
                tokio::spawn(async move {
                    connection.await;
                    drop(open);
                });
            }
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionAborted => {}
            Err(err) => {
                shared
                    .log
                    .warn(&format!("cannot accept a connection: {err}"));
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_RETRY) => {}
                    () = stopped(&mut stopping) => return,
                }
            }
        }
    }
}

/// One connection, over TLS or not, until it closes or the server stops.
/// Until the client sends its first byte (within the header timeout) the
/// connection holds its socket and this small future only: the handshake's
/// and hyper's state and buffers, boxed, come with the bytes.
async fn connection(
    socket: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut stopping: watch::Receiver<bool>,
) {
    let _ = socket.set_nodelay(true);
    let deadline = Instant::now() + shared.limits.header_timeout;
    // peek, not readable(): readable() may be ready before any byte is.
    let mut first = [0u8; 1];
    let first_byte = tokio::select! {
        peeked = tokio::time::timeout_at(deadline, socket.peek(&mut first)) => peeked,
        () = stopped(&mut stopping) => return,
    };
    if !matches!(first_byte, Ok(Ok(1))) {
        return;
    }
    let Some(tls) = &shared.tls else {
        return Box::pin(serve_http(TokioIo::new(socket), &shared, stopping)).await;
    };
    let stream = tokio::select! {
        stream = Box::pin(tls_handshake(socket, peer, tls, &shared, deadline)) => stream,
        () = stopped(&mut stopping) => None,
    };
    if let Some(stream) = stream {
        Box::pin(serve_http(TokioIo::new(stream), &shared, stopping)).await;
    }
}

/// The TLS handshake, by `deadline` (the header timeout from connecting);
/// a plain HTTP request is answered as Go answers it, and the connection
/// closed.
async fn tls_handshake(
    socket: TcpStream,
    peer: SocketAddr,
    tls: &Tls,
    shared: &Shared,
    deadline: Instant,
) -> Option<TlsStream<TcpStream>> {
    let timeout = shared.limits.header_timeout;
    let timed_out = || {
        shared.log.info(&format!(
            "TLS handshake with {peer} did not end within {timeout:?}: closed"
        ))
    };
    match tokio::time::timeout_at(deadline, sent_plain_http(&socket)).await {
        Ok(true) => {
            answer_plain_http(&socket).await;
            return None;
        }
        Ok(false) => {}
        Err(_) => {
            timed_out();
            return None;
        }
    }
    // An invalid web config refuses connections; the source said why.
    let config = tls().ok()?;
    let accepting = tokio_rustls::TlsAcceptor::from(config).accept(socket);
    match tokio::time::timeout_at(deadline, accepting).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(err)) => {
            let message = format!("TLS handshake with {peer} failed: {err}");
            shared.log.info(&message);
            None
        }
        Err(_) => {
            timed_out();
            None
        }
    }
}

/// Whether the client's first bytes are a plain HTTP request, not a TLS
/// ClientHello (Go's http.Server looks at the same five bytes).
async fn sent_plain_http(socket: &TcpStream) -> bool {
    let mut first = [0u8; 5];
    match socket.peek(&mut first).await {
        Ok(5) => [&b"GET /"[..], b"HEAD ", b"POST ", b"PUT /", b"OPTIO"].contains(&&first[..]),
        _ => false,
    }
}

/// Go's answer to plain HTTP on a TLS port. What the client sent is read
/// first: closing a socket with unread data resets the connection, and the
/// client might not see the answer.
async fn answer_plain_http(socket: &TcpStream) {
    let mut sent = [0u8; 16 * 1024];
    let _ = socket.try_read(&mut sent);
    if socket.writable().await.is_ok() {
        // A fresh socket's send buffer takes these few bytes at once.
        let _ = socket.try_write(PLAIN_HTTP_TO_TLS);
    }
}

/// HTTP/1.1 on `io` until the client closes, errs or times out, or the
/// server stops: then an idle connection is closed at once and a busy one
/// once its response is written (within the stop grace).
async fn serve_http<I>(io: TokioIo<I>, shared: &Arc<Shared>, mut stopping: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handler = shared.handler.clone();
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(answer(handler, request).await) }
    });
    let connection = shared.http.serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        () = stopped(&mut stopping) => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(shared.limits.stop_grace, connection).await;
}

/// The handler's answer to `request`, on a blocking thread. The request's
/// body, if any, is not read: hyper then closes the connection after the
/// response.
async fn answer(
    handler: Arc<Handler>,
    request: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let (parts, _body) = request.into_parts();
    let request = Request::from_parts(&parts);
    match tokio::task::spawn_blocking(move || handler(&request)).await {
        Ok(response) => response.into_hyper(),
        Err(err) => {
            Response::text(500, format!("500 answering the request failed: {err}\n")).into_hyper()
        }
    }
}
