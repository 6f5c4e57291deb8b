//! The server around [`http`]: a thread accepts on each listening socket,
//! each connection gets a thread of its own (a scrape can take seconds: it
//! must not hold up the others), and stopping refuses new connections,
//! closes idle ones and waits for the requests in flight to be answered.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Result};

use super::http::{self, Activity, Request, Response};
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

pub struct Server {
    /// The listening sockets (clones of those the accept threads own), to
    /// shut down when stopping.
    listening: Vec<TcpListener>,
    accepting: Vec<JoinHandle<()>>,
    stopping: Arc<AtomicBool>,
    connections: Arc<Connections>,
}

impl Server {
    /// Starts accepting on every listener; at most `limit` connections are
    /// open at once (more are closed as they come).
    pub fn start(
        listeners: Vec<TcpListener>,
        limit: usize,
        handler: Arc<Handler>,
        tls: Option<Tls>,
        log: Log,
    ) -> Result<Server> {
        let stopping = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Connections::new(limit));
        let mut server = Server {
            listening: Vec::new(),
            accepting: Vec::new(),
            stopping: stopping.clone(),
            connections: connections.clone(),
        };
        for listener in listeners {
            let address = listener.local_addr()?;
            server.listening.push(
                listener
                    .try_clone()
                    .map_err(|err| anyhow!("cannot listen on {address}: {err}"))?,
            );
            let acceptor = Acceptor {
                listener,
                stopping: stopping.clone(),
                connections: connections.clone(),
                handler: handler.clone(),
                tls: tls.clone(),
                log,
            };
            let thread = std::thread::Builder::new()
                .name("accept".into())
                .spawn(move || acceptor.run())
                .map_err(|err| anyhow!("cannot start accepting on {address}: {err}"))?;
            server.accepting.push(thread);
        }
        Ok(server)
    }

    /// Refuses new connections, closes the idle ones and returns once every
    /// request in flight has been answered.
    pub fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        for listener in &self.listening {
            // A listening socket shut down refuses connections (the backlog
            // included) and wakes its accept(2) with an error.
            // SAFETY: shutdown(2) on a descriptor `listener` owns and keeps open.
            unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
        }
        for thread in self.accepting {
            let _ = thread.join();
        }
        self.connections.stop();
    }
}

/// One listening socket's accept loop.
struct Acceptor {
    listener: TcpListener,
    stopping: Arc<AtomicBool>,
    connections: Arc<Connections>,
    handler: Arc<Handler>,
    tls: Option<Tls>,
    log: Log,
}

impl Acceptor {
    fn run(self) {
        loop {
            let accepted = self.listener.accept();
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            match accepted {
                Ok((socket, _)) => self.dispatch(socket),
                Err(err) if err.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(err) => {
                    // Out of descriptors or memory: wait for some to be freed
                    // rather than spin (as Go's http.Server does).
                    self.log.warn(&format!("cannot accept a connection: {err}"));
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }

    /// Answers `socket` on a thread of its own, if there is room.
    fn dispatch(&self, socket: TcpStream) {
        let Some(ticket) = self.connections.open(&socket) else {
            self.log
                .info("a connection over the limit of open connections closed");
            return;
        };
        let handler = self.handler.clone();
        let tls = self.tls.clone();
        let log = self.log;
        let spawned = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || match tls {
                None => serve(socket, &ticket, &*handler),
                Some(tls) => serve_tls(socket, &ticket, &*handler, &tls, log),
            });
        if let Err(err) = spawned {
            self.log
                .warn(&format!("cannot start a thread for a connection: {err}"));
        }
    }
}

fn serve(mut socket: TcpStream, ticket: &Ticket, handler: &Handler) {
    let _ = socket.set_nodelay(true);
    http::serve_connection(&mut socket, ticket, handler);
}

impl http::Socket for rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    fn socket(&self) -> &TcpStream {
        &self.sock
    }
}

/// HTTP over TLS on `socket`: the handshake (on this connection's thread, so
/// a slow client holds up no other), then requests as over plain TCP.
fn serve_tls(socket: TcpStream, ticket: &Ticket, handler: &Handler, tls: &Tls, log: Log) {
    let _ = socket.set_nodelay(true);
    if sent_plain_http(&socket) {
        // What the client sent is read first: closing a socket with unread
        // data resets the connection, and the client might not see the
        // answer.
        let _ = (&socket).read(&mut [0u8; 16 * 1024]);
        let _ = (&socket).write_all(PLAIN_HTTP_TO_TLS);
        let _ = socket.shutdown(Shutdown::Write);
        return;
    }
    // An invalid web config refuses connections; the source said why.
    let Ok(config) = tls() else { return };
    let Ok(connection) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut stream = rustls::StreamOwned::new(connection, socket);
    if let Err(err) = handshake(&mut stream) {
        let peer = stream
            .sock
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        log.info(&format!("TLS handshake with {peer} failed: {err}"));
        return;
    }
    http::serve_connection(&mut stream, ticket, handler);
    stream.conn.send_close_notify();
    let _ = stream.conn.complete_io(&mut stream.sock);
}

/// Whether the client's first bytes are a plain HTTP request, not a TLS
/// ClientHello (Go's http.Server looks at the same five bytes).
fn sent_plain_http(socket: &TcpStream) -> bool {
    let mut first = [0u8; 5];
    let _ = socket.set_read_timeout(Some(http::IO_TIMEOUT));
    match socket.peek(&mut first) {
        Ok(5) => [&b"GET /"[..], b"HEAD ", b"POST ", b"PUT /", b"OPTIO"].contains(&&first[..]),
        _ => false,
    }
}

/// The TLS handshake, within the I/O timeout; a client whose certificate is
/// refused gets its alert.
fn handshake(
    stream: &mut rustls::StreamOwned<rustls::ServerConnection, TcpStream>,
) -> io::Result<()> {
    stream.sock.set_read_timeout(Some(http::IO_TIMEOUT))?;
    stream.sock.set_write_timeout(Some(http::IO_TIMEOUT))?;
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(())
}

/// The open connections: whether each is answering a request, so that
/// stopping closes the idle ones and waits for the others.
struct Connections {
    open: Mutex<Open>,
    /// Signalled each time a connection closes.
    closed: Condvar,
    limit: usize,
}

#[derive(Default)]
struct Open {
    stopping: bool,
    next: u64,
    /// id → (a handle on its socket, whether a request is being answered).
    sockets: HashMap<u64, (TcpStream, bool)>,
}

impl Connections {
    fn new(limit: usize) -> Connections {
        Connections {
            open: Mutex::new(Open::default()),
            closed: Condvar::new(),
            limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `socket`; None when stopping or full.
    fn open(self: &Arc<Self>, socket: &TcpStream) -> Option<Ticket> {
        let handle = socket.try_clone().ok()?;
        let mut open = self.lock();
        if open.stopping || open.sockets.len() >= self.limit {
            return None;
        }
        let id = open.next;
        open.next += 1;
        open.sockets.insert(id, (handle, false));
        Some(Ticket {
            connections: self.clone(),
            id,
        })
    }

    /// Marks connection `id` busy or idle; false when stopping.
    fn mark(&self, id: u64, busy: bool) -> bool {
        let mut open = self.lock();
        if let Some(entry) = open.sockets.get_mut(&id) {
            entry.1 = busy;
        }
        !open.stopping
    }

    fn close(&self, id: u64) {
        self.lock().sockets.remove(&id);
        self.closed.notify_all();
    }

    /// Shuts the idle connections down (their threads, waiting for a request,
    /// see the end of the stream) and waits until every connection is closed.
    fn stop(&self) {
        let mut open = self.lock();
        open.stopping = true;
        for (socket, busy) in open.sockets.values() {
            if !busy {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
        while !open.sockets.is_empty() {
            open = self
                .closed
                .wait(open)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A connection's place among the open ones, given up when dropped.
struct Ticket {
    connections: Arc<Connections>,
    id: u64,
}

impl Activity for Ticket {
    fn busy(&self) -> bool {
        self.connections.mark(self.id, true)
    }

    fn idle(&self) -> bool {
        self.connections.mark(self.id, false)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.connections.close(self.id);
    }
}
