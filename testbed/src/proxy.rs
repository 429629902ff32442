//! A TCP proxy on 127.0.0.1 that can freeze or cut the connections going through it.
//!
//! It sits between a client and a server (say, [`EmbeddedServer`](crate::EmbeddedServer)) to
//! simulate network failures that a server cannot fake by itself:
//!
//! * [`Proxy::freeze`]: a peer that went away without a word (host powered off, cable
//!   pulled, firewall dropping packets). The connections open at that moment stop
//!   forwarding in both directions, but both sockets stay open, so the client sees neither
//!   EOF nor a reset: only silence. The proxy stops reading from frozen sockets, so a client
//!   that keeps writing eventually blocks on a full socket buffer, as with a real dead peer.
//! * [`Proxy::cut`]: a connection reset. Every open connection is closed at once.
//!
//! Plain threads: one accept thread, two per connection (one per direction).
//!
//! Invariants: a connection is in the proxy's table from its accept until its last pump
//! ends (so [`Proxy::freeze`] and [`Proxy::cut`] see it even before the target answers); a
//! frozen connection never forwards again, and stays open until it is cut, the proxy
//! drops, or its client hangs up.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{io_err, Result};

/// How often blocked pumps look at the freeze and close flags.
const TICK: Duration = Duration::from_millis(20);
/// How long the proxy tries to reach the target for one accepted connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A TCP proxy from an ephemeral port on 127.0.0.1 to a target address.
///
/// ```no_run
/// let server = testbed::EmbeddedServer::builder().password("alice", "secret").start()?;
/// let proxy = testbed::Proxy::start(server.addr())?;
/// // Connect the client to proxy.port() instead of server.port(), then:
/// proxy.freeze(); // the client's connection is now silent, as if the host vanished
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Dropping the proxy stops the listener and closes every connection; it waits at most
/// about a second.
pub struct Proxy {
    /// Where clients connect: 127.0.0.1 and an ephemeral port.
    addr: SocketAddr,
    /// Where every accepted connection is forwarded.
    target: SocketAddr,
    /// State shared with the accept thread and the pumps.
    shared: Arc<Shared>,
    /// The accept thread; `None` once joined.
    accept_thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("target", &self.target)
            .field("connections", &self.connections())
            .field("open_connections", &self.open_connections())
            .finish()
    }
}

struct Shared {
    /// Set when the proxy drops: the accept thread and every pump end.
    stopping: AtomicBool,
    /// Connections accepted so far.
    accepted: AtomicU64,
    /// The next connection id (ids are never reused).
    next_id: AtomicU64,
    /// Open connections by id.
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Shared {
    fn conns(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One proxied connection: the client's socket and, once connected, the target's.
struct Conn {
    /// The accepted socket.
    client: TcpStream,
    /// The socket to the target (`None` until connected).
    upstream: Mutex<Option<TcpStream>>,
    /// Set by [`Proxy::freeze`]: the pumps stop forwarding; never cleared.
    frozen: AtomicBool,
    /// Set when the connection is closed (both sockets shut down); never cleared.
    closed: AtomicBool,
    /// Pump threads still running; the last one out unregisters the connection.
    pumps: AtomicUsize,
}

impl Conn {
    /// Closes both sockets abruptly: no more forwarding, the peers see EOF or a reset.
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        abort_socket(&self.client);
        if let Some(up) = &*self.upstream.lock().unwrap_or_else(|e| e.into_inner()) {
            abort_socket(up);
        }
    }

    fn stopped(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn frozen(&self) -> bool {
        self.frozen.load(Ordering::SeqCst)
    }
}

/// Makes the eventual close of `stream` send a reset (SO_LINGER 0) and shuts it down
/// now, which also wakes any thread blocked on it.
fn abort_socket(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized struct.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// Whether the peer of `stream` has closed or reset its end (without reading any data).
fn peer_hung_up(stream: &TcpStream, wait: Duration) -> bool {
    let mut fds = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd.
    let n = unsafe { libc::poll(&mut fds, 1, wait.as_millis() as libc::c_int) };
    n > 0 && fds.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

impl Proxy {
    /// Starts a proxy listening on 127.0.0.1 (ephemeral port) that forwards every accepted
    /// connection to `target`. If the target cannot be reached, the accepted connection is
    /// closed.
    pub fn start(target: SocketAddr) -> Result<Proxy> {
        let listener = TcpListener::bind((crate::LOCALHOST, 0)).map_err(io_err("binding 127.0.0.1:0"))?;
        let addr = listener.local_addr().map_err(io_err("local_addr"))?;
        let shared = Arc::new(Shared {
            stopping: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
        });
        let loop_shared = shared.clone();
        let accept_thread = std::thread::Builder::new()
            .name(format!("testbed-proxy-{}", addr.port()))
            .spawn(move || accept_loop(listener, target, loop_shared))
            .map_err(io_err("spawning the proxy thread"))?;
        Ok(Proxy {
            addr,
            target,
            shared,
            accept_thread: Some(accept_thread),
        })
    }

    /// The port the proxy listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `127.0.0.1:PORT`, where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where connections are forwarded.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Freezes every connection open now: nothing more is forwarded in either direction
    /// and nothing is read, but both sockets stay open (a dead peer that never answers).
    /// Connections accepted later are forwarded normally.
    ///
    /// A frozen connection stays open until [`cut`](Self::cut), the drop of the proxy, or
    /// the client closing its end: the proxy notices that (without reading) and then closes
    /// the target side too, so [`open_connections`](Self::open_connections) tells whether a
    /// client gave up on a frozen connection.
    pub fn freeze(&self) {
        for conn in self.shared.conns().values() {
            conn.frozen.store(true, Ordering::SeqCst);
        }
    }

    /// Closes every open connection at once (frozen or not): both the client and the target
    /// see the connection end (EOF, or a reset on their next write). The proxy keeps
    /// accepting new connections.
    pub fn cut(&self) {
        for conn in self.shared.conns().values() {
            conn.close();
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections currently open (accepted and not yet closed on both sides).
    pub fn open_connections(&self) -> usize {
        self.shared.conns().len()
    }

    /// Waits until [`open_connections`](Self::open_connections) is `n`, for at most
    /// `timeout`; true if it got there.
    pub fn wait_open_connections(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.open_connections() == n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own; it is closed at once.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        self.cut();
        if let Some(thread) = self.accept_thread.take() {
            let deadline = Instant::now() + Duration::from_secs(1);
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
        // Pump threads end on their own within a tick: their sockets are shut down.
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    loop {
        let accepted = listener.accept();
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let client = match accepted {
            Ok((client, _)) => client,
            Err(e) => {
                log::warn!("testbed proxy: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let _ = client.set_nodelay(true);
        let conn = Arc::new(Conn {
            client,
            upstream: Mutex::new(None),
            frozen: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            pumps: AtomicUsize::new(1),
        });
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        // Registered before the target is reached, so that freeze() and cut() see it.
        shared.conns().insert(id, conn.clone());
        let thread_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("testbed-proxy-conn-{id}"))
            .spawn(move || serve(id, conn, target, thread_shared));
        if let Err(e) = spawned {
            log::warn!("testbed proxy: cannot spawn a connection thread: {e}");
            if let Some(conn) = shared.conns().remove(&id) {
                conn.close();
            }
        }
    }
}

/// Connects to the target, then pumps both directions (this thread: client to target).
fn serve(id: u64, conn: Arc<Conn>, target: SocketAddr, shared: Arc<Shared>) {
    let upstream = match TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) {
        Ok(up) => up,
        Err(e) => {
            log::debug!("testbed proxy: cannot reach {target}: {e}");
            conn.close();
            finish_pump(id, &conn, &shared);
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    // Each pump thread owns its own handles on the two sockets.
    let clones = (|| {
        Ok::<_, io::Error>((
            conn.client.try_clone()?,
            upstream.try_clone()?,
            upstream.try_clone()?,
            conn.client.try_clone()?,
        ))
    })();
    *conn.upstream.lock().unwrap_or_else(|e| e.into_inner()) = Some(upstream);
    let (client_r, upstream_w, back_r, back_w) = match clones {
        // cut() may have run while we were connecting, before it could see the target side.
        Ok(c) if !conn.stopped() => c,
        result => {
            if let Err(e) = result {
                log::warn!("testbed proxy: cannot clone sockets: {e}");
            }
            conn.close();
            finish_pump(id, &conn, &shared);
            return;
        }
    };
    conn.pumps.fetch_add(1, Ordering::SeqCst);
    let (back_conn, back_shared) = (conn.clone(), shared.clone());
    let spawned = std::thread::Builder::new()
        .name(format!("testbed-proxy-back-{id}"))
        .spawn(move || {
            pump(&back_conn, back_r, back_w, false);
            finish_pump(id, &back_conn, &back_shared);
        });
    if spawned.is_err() {
        conn.pumps.fetch_sub(1, Ordering::SeqCst);
        conn.close();
    } else {
        pump(&conn, client_r, upstream_w, true);
    }
    finish_pump(id, &conn, &shared);
}

/// The last pump of a connection to end closes it and unregisters it.
fn finish_pump(id: u64, conn: &Arc<Conn>, shared: &Shared) {
    if conn.pumps.fetch_sub(1, Ordering::SeqCst) == 1 {
        conn.close();
        shared.conns().remove(&id);
    }
}

/// Copies `from` to `to` until EOF, an error, a close, or a freeze. `from_client` tells the
/// direction: a frozen connection is closed when its client hangs up.
fn pump(conn: &Conn, mut from: TcpStream, mut to: TcpStream, from_client: bool) {
    let _ = from.set_read_timeout(Some(TICK));
    let _ = to.set_write_timeout(Some(TICK));
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        if conn.stopped() {
            return;
        }
        if conn.frozen() {
            // Read nothing, forward nothing; only watch for the client giving up.
            if from_client && peer_hung_up(&from, TICK) {
                conn.close();
                return;
            }
            if !from_client {
                std::thread::sleep(TICK);
            }
            continue;
        }
        let n = match from.read(&mut buf) {
            Ok(0) if conn.frozen() => {
                // Frozen while we were reading: a client that gives up closes it all.
                if from_client {
                    conn.close();
                }
                return;
            }
            Ok(0) => {
                // Half-close: pass the EOF on; the other direction may still be talking.
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                conn.close();
                return;
            }
        };
        let mut data = &buf[..n];
        while !data.is_empty() {
            if conn.stopped() {
                return;
            }
            if conn.frozen() {
                // Frozen mid-chunk: the rest is never delivered.
                break;
            }
            match to.write(data) {
                Ok(0) => {
                    conn.close();
                    return;
                }
                Ok(w) => data = &data[w..],
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => {
                    conn.close();
                    return;
                }
            }
        }
    }
}
