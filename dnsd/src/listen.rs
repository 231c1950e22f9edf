//! The DNS listeners: per configured address, one UDP socket read by one thread per CPU
//! (served by [`crate::udp`]'s fast path) and one TCP listener, served by a
//! hickory [`Server`] whose catalog holds only the `vm.` zone (any other name is REFUSED). UDP
//! queries the fast path does not answer are relayed to the same hickory server on a private
//! loopback socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_server::Server;
use hickory_server::proto::rr::LowerName;
use hickory_server::zone_handler::{Catalog, ZoneHandler};
use tokio::net::{TcpListener, UdpSocket};

use crate::udp::{UdpWorkers, bind_udp, loopback_for};

use crate::zone::{VmZoneHandler, Zone, origin};

/// How long a TCP connection may stay idle between queries before it is closed: long enough
/// for a resolver to reuse it, short enough that idle connections do not pile up.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Outgoing buffer per TCP connection, in responses.
const TCP_RESPONSE_BUFFER: usize = 32;

/// How many times binding port 0 is retried when the UDP port it got is taken on TCP.
const EPHEMERAL_BIND_ATTEMPTS: usize = 20;

/// Why a listener could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The UDP socket.
    #[error("binding UDP {addr}")]
    Udp {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TCP listener.
    #[error("binding TCP {addr}")]
    Tcp {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// One bound address: its UDP sockets and TCP listener share the port.
#[derive(Debug)]
pub struct Bound {
    /// The UDP socket, once per reader thread (clones of one socket: one port, one queue).
    pub udp: Vec<std::net::UdpSocket>,
    /// The TCP listener.
    pub tcp: TcpListener,
    /// The address actually bound (port 0 resolved).
    pub addr: SocketAddr,
}

/// Binds UDP and TCP on `addr`. Port 0 picks a port free on both.
pub async fn bind(addr: SocketAddr) -> Result<Bound, BindError> {
    let attempts = if addr.port() == 0 {
        EPHEMERAL_BIND_ATTEMPTS
    } else {
        1
    };
    let mut last = None;
    for _ in 0..attempts {
        let udp = bind_udp(addr).map_err(|source| BindError::Udp { addr, source })?;
        let bound = udp
            .local_addr()
            .map_err(|source| BindError::Udp { addr, source })?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => {
                let mut sockets = Vec::with_capacity(udp_reader_threads());
                for _ in 1..udp_reader_threads() {
                    sockets.push(udp.try_clone().map_err(|source| BindError::Udp {
                        addr: bound,
                        source,
                    })?);
                }
                sockets.push(udp);
                return Ok(Bound {
                    udp: sockets,
                    tcp,
                    addr: bound,
                });
            }
            Err(source) => {
                last = Some(BindError::Tcp {
                    addr: bound,
                    source,
                })
            }
        }
    }
    Err(last.unwrap_or_else(|| BindError::Tcp {
        addr,
        source: std::io::Error::other("no attempt made"),
    }))
}

/// Binds every address, failing on the first that cannot be bound (nothing stays bound then:
/// the sockets already opened are dropped).
pub async fn bind_all(addrs: &[SocketAddr]) -> Result<Vec<Bound>, BindError> {
    let mut out = Vec::with_capacity(addrs.len());
    for a in addrs {
        out.push(bind(*a).await?);
    }
    Ok(out)
}

/// Binds UDP and TCP on every address with blocking sockets and releases them at once: a
/// start-up check that needs no runtime. Port 0 always passes.
pub fn check_bindable(addrs: &[SocketAddr]) -> Result<(), BindError> {
    for &addr in addrs {
        let udp =
            std::net::UdpSocket::bind(addr).map_err(|source| BindError::Udp { addr, source })?;
        let tcp =
            std::net::TcpListener::bind(addr).map_err(|source| BindError::Tcp { addr, source })?;
        drop((udp, tcp));
    }
    Ok(())
}

/// How many reader threads serve each address's UDP socket: one per CPU.
pub fn udp_reader_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// A DNS server answering from `current` on every bound address: the hickory server (TCP, and
/// UDP relayed from the fast path) and the UDP threads of each address. Needs a tokio runtime.
pub fn serve(
    bound: Vec<Bound>,
    current: Arc<ArcSwap<Zone>>,
) -> Result<(Server<Catalog>, Vec<UdpWorkers>), BindError> {
    let mut catalog = Catalog::new();
    let handler: Arc<dyn ZoneHandler> = Arc::new(VmZoneHandler::new(Arc::clone(&current)));
    catalog.upsert(LowerName::new(&origin()), vec![handler]);
    let mut server = Server::new(catalog);
    let mut workers = Vec::with_capacity(bound.len());
    for b in bound {
        let private = loopback_for(b.addr);
        let udp_err = |source| BindError::Udp {
            addr: private,
            source,
        };
        let inner = std::net::UdpSocket::bind(private).map_err(udp_err)?;
        let inner_addr = inner.local_addr().map_err(udp_err)?;
        inner.set_nonblocking(true).map_err(udp_err)?;
        server.register_socket(UdpSocket::from_std(inner).map_err(udp_err)?);
        server.register_listener(b.tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
        let addr = b.addr;
        workers.push(
            UdpWorkers::start(b.udp, inner_addr, Arc::clone(&current))
                .map_err(|source| BindError::Udp { addr, source })?,
        );
    }
    Ok((server, workers))
}
