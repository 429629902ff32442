//! A TCP relay on 127.0.0.1 that adds a fixed one-way delay to every byte in both
//! directions, for the latency case on machines whose kernel has no `netem` qdisc.
//!
//! Each accepted connection is held for one round trip before it is connected upstream
//! (the TCP handshake's round trip: the client's connect returns at once here, so the
//! server's banner is what it waits for), then every chunk read from either side is written
//! to the other side `delay` after it was read. Order is kept per direction. Two reader
//! threads per connection and one writer thread for all.
//!
//! Invariant: no byte is written before its delay has passed, and bytes of one direction
//! are written in the order they were read.

use std::collections::BinaryHeap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

enum Payload {
    Data(Vec<u8>),
    Eof,
}

struct Item {
    /// When it may be written.
    due: Instant,
    /// Order of reading: breaks ties of `due`, so one direction's order is kept.
    seq: u64,
    /// The socket it goes to.
    to: Arc<TcpStream>,
    /// What to do there.
    payload: Payload,
}

impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        self.due == o.due && self.seq == o.seq
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    // A max-heap: the earliest (due, seq) must compare greatest.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.due.cmp(&self.due).then(o.seq.cmp(&self.seq))
    }
}

struct Queue {
    /// Items not yet written, earliest `due` first.
    heap: Mutex<BinaryHeap<Item>>,
    /// Wakes the writer when an item is pushed or the relay stops.
    cv: Condvar,
    /// The next item's `seq`.
    seq: AtomicU64,
    /// Set when the relay drops: the writer and the readers end.
    stop: AtomicBool,
}

impl Queue {
    fn push(&self, due: Instant, to: &Arc<TcpStream>, payload: Payload) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut h = self.heap.lock().unwrap_or_else(|e| e.into_inner());
        h.push(Item {
            due,
            seq,
            to: to.clone(),
            payload,
        });
        self.cv.notify_one();
    }
}

/// The relay; stops accepting and lets its threads end when dropped.
pub struct DelayRelay {
    /// The relay's port on 127.0.0.1 (clients connect here).
    pub port: u16,
    /// The queue shared with the writer thread.
    queue: Arc<Queue>,
}

impl DelayRelay {
    /// Listens on 127.0.0.1 (ephemeral port) and relays to 127.0.0.1:`upstream`, adding
    /// `one_way` to each direction.
    pub fn start(upstream: u16, one_way: Duration) -> std::io::Result<DelayRelay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let queue = Arc::new(Queue {
            heap: Mutex::new(BinaryHeap::new()),
            cv: Condvar::new(),
            seq: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let q = queue.clone();
        std::thread::Builder::new()
            .name("delay-writer".into())
            .spawn(move || writer(&q))?;
        let q = queue.clone();
        std::thread::Builder::new().name("delay-accept".into()).spawn(move || {
            for conn in listener.incoming() {
                if q.stop.load(Ordering::Acquire) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let q = q.clone();
                let _ = std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || relay(client, upstream, one_way, q));
            }
        })?;
        Ok(DelayRelay { port, queue })
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.queue.stop.store(true, Ordering::Release);
        self.queue.cv.notify_all();
        // Wake the accept loop so that it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn relay(client: TcpStream, upstream: u16, one_way: Duration, q: Arc<Queue>) {
    let _ = client.set_nodelay(true);
    let client = Arc::new(client);
    // The handshake's round trip, then the connection reaches the server.
    std::thread::sleep(one_way * 2);
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = server.set_nodelay(true);
    let server = Arc::new(server);
    let (c2, s2, q2) = (client.clone(), server.clone(), q.clone());
    let up = std::thread::Builder::new()
        .stack_size(64 * 1024)
        .spawn(move || pump(&c2, &s2, one_way, &q2));
    pump(&server, &client, one_way, &q);
    if let Ok(h) = up {
        let _ = h.join();
    }
}

fn pump(from: &Arc<TcpStream>, to: &Arc<TcpStream>, one_way: Duration, q: &Queue) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match (&**from).read(&mut buf) {
            Ok(0) | Err(_) => {
                q.push(Instant::now() + one_way, to, Payload::Eof);
                return;
            }
            Ok(n) => q.push(Instant::now() + one_way, to, Payload::Data(buf[..n].to_vec())),
        }
    }
}

fn writer(q: &Queue) {
    let mut h = q.heap.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if q.stop.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        match h.peek() {
            Some(item) if item.due <= now => {
                let item = h.pop().expect("peeked");
                drop(h);
                match item.payload {
                    Payload::Data(d) => {
                        let _ = (&*item.to).write_all(&d);
                    }
                    Payload::Eof => {
                        let _ = item.to.shutdown(Shutdown::Write);
                    }
                }
                h = q.heap.lock().unwrap_or_else(|e| e.into_inner());
            }
            Some(item) => {
                let wait = item.due - now;
                h = q.cv.wait_timeout(h, wait).unwrap_or_else(|e| e.into_inner()).0;
            }
            None => {
                h =
                    q.cv.wait_timeout(h, Duration::from_millis(200))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
            }
        }
    }
}
