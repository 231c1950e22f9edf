//! UDP serving: one socket per address, read by one thread per CPU. Each thread reads the
//! queued datagrams in batches ([`Batch`]: one `recvmmsg`, one `sendmmsg`), answers the plain
//! A/AAAA case from the current snapshot's pre-encoded records ([`Zone::answer_fast`]) and
//! relays every other datagram to the hickory server.
//!
//! The relay: hickory listens on a private loopback UDP socket; a datagram the fast path does not
//! answer is sent there from the address's relay socket with its id replaced by a relay slot
//! number, and the reply, read by the relay thread, gets its id back and goes to the original
//! client from the public port. So hickory keeps every rule it had (NXDOMAIN, REFUSED, NOTIMP,
//! FORMERR, truncation, EDNS versions), and a datagram hickory does not answer (shorter than a
//! header, a response) is not answered either. Datagrams shorter than a header are dropped
//! before the relay, as hickory would.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::mmsg::Batch;
use crate::zone::Zone;

/// How often a blocked reader looks at the stop flag.
const POLL: Duration = Duration::from_millis(200);
/// Relay slots: one per in-flight relayed query id.
const SLOTS: usize = 1 << 16;
/// A DNS header.
const HEADER: usize = 12;

/// Binds the UDP socket of `addr`, without `SO_REUSEPORT`: a port shared through
/// `SO_REUSEPORT` can be joined by any other socket of the same user that sets it too, even one
/// the kernel hands an ephemeral port (a root `dig` was given dnsd's port that way, connected
/// to it, and received its own query back). So the port is this socket's alone, and the reader
/// threads share it ([`UdpSocket::try_clone`]).
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    UdpSocket::bind(addr)
}

/// The loopback address of `addr`'s family, port 0: where the relayed hickory socket listens.
pub fn loopback_for(addr: SocketAddr) -> SocketAddr {
    if addr.is_ipv4() {
        (Ipv4Addr::LOCALHOST, 0).into()
    } else {
        (Ipv6Addr::LOCALHOST, 0).into()
    }
}

/// The threads serving one address's UDP sockets.
pub struct UdpWorkers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for UdpWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpWorkers")
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

/// A relayed query's client and original id.
type Origin = (SocketAddr, [u8; 2]);

/// Where relayed queries came from, by relay slot.
struct Relay {
    socket: UdpSocket,
    next: AtomicU16,
    slots: Mutex<Vec<Option<Origin>>>,
}

impl Relay {
    /// Sends `datagram` to hickory on behalf of `client`.
    fn forward(&self, datagram: &mut [u8], client: SocketAddr) {
        let slot = self.next.fetch_add(1, Ordering::Relaxed);
        let id = [datagram[0], datagram[1]];
        {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            slots[usize::from(slot)] = Some((client, id));
        }
        datagram[..2].copy_from_slice(&slot.to_be_bytes());
        if let Err(e) = self.socket.send(datagram) {
            tracing::debug!(error = %e, "relaying a query to hickory");
        }
    }

    /// The client and original id of the reply `datagram`, whose slot is freed.
    fn take(&self, datagram: &[u8]) -> Option<Origin> {
        let slot = u16::from_be_bytes([*datagram.first()?, *datagram.get(1)?]);
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots[usize::from(slot)].take()
    }
}

impl UdpWorkers {
    /// Serves `sockets` (bound to one address) from `current`, relaying to the hickory socket at
    /// `hickory`.
    pub fn start(
        sockets: Vec<UdpSocket>,
        hickory: SocketAddr,
        current: Arc<ArcSwap<Zone>>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let relay_socket = UdpSocket::bind(loopback_for(hickory))?;
        relay_socket.connect(hickory)?;
        relay_socket.set_read_timeout(Some(POLL))?;
        let relay = Arc::new(Relay {
            socket: relay_socket,
            next: AtomicU16::new(0),
            slots: Mutex::new(vec![None; SLOTS]),
        });
        // Built first so that an error below stops the threads already started (Drop).
        let mut workers = Self {
            stop,
            threads: Vec::with_capacity(sockets.len() + 1),
        };
        let Some(first) = sockets.first() else {
            return Ok(workers);
        };
        let reply_from = first.try_clone()?;
        for socket in sockets {
            socket.set_read_timeout(Some(POLL))?;
            let (stop, relay, current) = (workers.stop.clone(), relay.clone(), current.clone());
            workers.threads.push(
                std::thread::Builder::new()
                    .name("dnsd-udp".into())
                    .spawn(move || serve(&socket, &relay, &current, &stop))?,
            );
        }
        let stop = workers.stop.clone();
        workers.threads.push(
            std::thread::Builder::new()
                .name("dnsd-relay".into())
                .spawn(move || relay_replies(&relay, &reply_from, &stop))?,
        );
        Ok(workers)
    }

    /// Stops every thread and waits for them (at most one poll period); the sockets close.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in std::mem::take(&mut self.threads) {
            if t.join().is_err() {
                tracing::error!("a DNS UDP thread panicked");
            }
        }
    }
}

impl Drop for UdpWorkers {
    /// Dropped without [`UdpWorkers::stop`] (a start-up error): the threads stop by themselves
    /// within one poll period.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::Interrupted
    )
}

/// One socket's loop: read a batch, answer what the snapshot can, relay the rest, send the
/// batch's answers. The snapshot is loaded once per batch, after its datagrams arrived, so a
/// change published before a query was sent is seen by that query.
fn serve(socket: &UdpSocket, relay: &Relay, current: &ArcSwap<Zone>, stop: &AtomicBool) {
    let mut batch = Batch::new();
    while !stop.load(Ordering::Relaxed) {
        match batch.recv(socket) {
            Ok(_) => {}
            Err(e) if is_timeout(&e) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "receiving DNS queries");
                continue;
            }
        }
        let zone = current.load();
        batch.each(|datagram, client, answer| {
            let Some(client) = client else {
                return false;
            };
            if datagram.len() < HEADER || client.port() == 0 {
                return false;
            }
            if zone.answer_fast(datagram, answer) {
                return true;
            }
            relay.forward(datagram, client);
            false
        });
        drop(zone);
        batch.send(socket, |e, client| {
            tracing::debug!(error = %e, ?client, "sending a DNS answer");
        });
    }
}

/// The relay's loop: hickory's replies back to their clients.
fn relay_replies(relay: &Relay, reply_from: &UdpSocket, stop: &AtomicBool) {
    let mut buf = vec![0u8; u16::MAX as usize];
    while !stop.load(Ordering::Relaxed) {
        let n = match relay.socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if is_timeout(&e) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "receiving a reply from hickory");
                continue;
            }
        };
        let Some((client, id)) = relay.take(&buf[..n]) else {
            continue;
        };
        buf[..2].copy_from_slice(&id);
        if let Err(e) = reply_from.send_to(&buf[..n], client) {
            tracing::debug!(error = %e, %client, "sending a DNS answer");
        }
    }
}
