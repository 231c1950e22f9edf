//! Where the agent listens: AF_VSOCK in a real guest, a Unix socket under the simulator.
//!
//! Firecracker's hybrid vsock delivers a host `CONNECT <port>` to the guest's AF_VSOCK listener
//! on that port; the simulator instead starts one agent per port on a Unix socket
//! (`unix:<PATH>`) and forwards to it. Both kinds of stream are served identically.
//!
//! Who may connect. The agent runs commands as root, so it serves nobody but its host side:
//! - over AF_VSOCK only the host, CID 2 (`VMADDR_CID_HOST`), the peer address the kernel
//!   reports for each accepted connection; every other CID is closed unanswered;
//! - over a Unix socket (the simulator) only the agent's own user, checked with the peer's
//!   credentials (`SO_PEERCRED`); the socket is also mode 0600, inside the simulator's private
//!   0700 directory.
//!
//! On the host, the hypervisor's vsock socket that leads here is guarded by the controller's
//! root-only run directory. There is no token: reaching the socket is the credential, and
//! only root can.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{UnixListener, UnixStream};
use tokio_vsock::{VMADDR_CID_ANY, VMADDR_CID_HOST, VsockAddr, VsockListener};

/// Mode of the agent's Unix socket: its owner only may connect.
const SOCKET_MODE: u32 = 0o600;

/// A listen address: `vsock:<PORT>` or `unix:<PATH>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// AF_VSOCK, any CID, this port.
    Vsock {
        /// The vsock port.
        port: u32,
    },
    /// A Unix stream socket at this path.
    Unix {
        /// The socket path.
        path: PathBuf,
    },
}

/// A listen address did not parse.
#[derive(Debug, thiserror::Error)]
pub enum ParseListenError {
    /// Neither `vsock:` nor `unix:`.
    #[error("listen address {0:?} must be vsock:<PORT> or unix:<PATH>")]
    Scheme(String),
    /// `vsock:` followed by something that is not a port.
    #[error("vsock port {0:?} is not a number between 0 and 4294967294")]
    Port(String),
    /// `unix:` with nothing after it.
    #[error("unix socket path is empty")]
    EmptyPath,
}

impl FromStr for ListenAddr {
    type Err = ParseListenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(port) = s.strip_prefix("vsock:") {
            // u32::MAX is VMADDR_PORT_ANY, which asks the kernel to pick: not a fixed address.
            match port.parse::<u32>() {
                Ok(p) if p != u32::MAX => Ok(Self::Vsock { port: p }),
                _ => Err(ParseListenError::Port(port.to_owned())),
            }
        } else if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                Err(ParseListenError::EmptyPath)
            } else {
                Ok(Self::Unix { path: path.into() })
            }
        } else {
            Err(ParseListenError::Scheme(s.to_owned()))
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Vsock { port } => write!(f, "vsock:{port}"),
            Self::Unix { path } => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Binding failed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The AF_VSOCK bind failed (no vsock device in this guest, port taken, ...).
    #[error("binding vsock port {port}")]
    Vsock {
        /// The port.
        port: u32,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another process answers on the Unix socket already.
    #[error("unix socket {0} is in use by a running process")]
    InUse(PathBuf),
    /// A stale socket file could not be removed.
    #[error("removing stale unix socket {path}")]
    RemoveStale {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The Unix bind failed.
    #[error("binding unix socket {path}")]
    Unix {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A bound listener of either kind.
#[derive(Debug)]
pub enum Listener {
    /// AF_VSOCK.
    Vsock(VsockListener),
    /// A Unix socket; its file is removed when the listener is dropped.
    Unix(UnixListener, SocketFile),
}

/// A connection stream of either kind.
pub trait Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Conn for T {}

/// Removes the Unix socket file on drop, so a clean shutdown leaves no stale socket.
#[derive(Debug)]
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.0.display(), error = %e, "removing the agent socket failed");
        }
    }
}

impl Listener {
    /// Binds `addr`. A Unix socket file left by a crashed agent is replaced; one that a live
    /// process still answers on is an error.
    pub async fn bind(addr: &ListenAddr) -> Result<Self, BindError> {
        match addr {
            ListenAddr::Vsock { port } => {
                let l = VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, *port)).map_err(
                    |source| BindError::Vsock {
                        port: *port,
                        source,
                    },
                )?;
                Ok(Self::Vsock(l))
            }
            ListenAddr::Unix { path } => {
                remove_stale(path).await?;
                let l = UnixListener::bind(path).map_err(|source| BindError::Unix {
                    path: path.clone(),
                    source,
                })?;
                let file = SocketFile(path.clone());
                restrict_socket(path).map_err(|source| BindError::Unix {
                    path: path.clone(),
                    source,
                })?;
                Ok(Self::Unix(l, file))
            }
        }
    }

    /// Accepts the next connection from a trusted peer (see the module doc); connections from
    /// anyone else are closed at once and logged, and the wait goes on.
    pub async fn accept(&self) -> std::io::Result<Box<dyn Conn>> {
        loop {
            match self {
                Self::Vsock(l) => {
                    let (stream, peer) = l.accept().await?;
                    match trust_vsock_peer(peer.cid()) {
                        Ok(()) => return Ok(Box::new(stream)),
                        Err(why) => tracing::warn!(peer.cid = peer.cid(), "{why}"),
                    }
                }
                Self::Unix(l, _) => {
                    let (stream, _) = l.accept().await?;
                    let peer = stream.peer_cred().map(|c| c.uid());
                    match trust_unix_peer(peer, nix::unistd::geteuid().as_raw()) {
                        Ok(()) => return Ok(Box::new(stream)),
                        Err(why) => tracing::warn!("{why}"),
                    }
                }
            }
        }
    }
}

/// Only the host may talk to the agent over vsock: a connection from another guest (the kernel
/// does not route guest-to-guest vsock under Firecracker, but a different hypervisor might) or
/// from a local process in the guest (`VMADDR_CID_LOCAL`) is refused.
fn trust_vsock_peer(cid: u32) -> Result<(), String> {
    if cid == VMADDR_CID_HOST {
        Ok(())
    } else {
        Err(format!(
            "refused a vsock connection from CID {cid}: only the host (CID {VMADDR_CID_HOST}) may \
             use the agent"
        ))
    }
}

/// Only the agent's own user (root in a guest; the simulator's user, which forwards the host's
/// hybrid-vsock connections) may talk to it over a Unix socket.
fn trust_unix_peer(peer_uid: std::io::Result<u32>, own_uid: u32) -> Result<(), String> {
    match peer_uid {
        Ok(uid) if uid == own_uid => Ok(()),
        Ok(uid) => Err(format!(
            "refused a unix-socket connection from uid {uid}: only uid {own_uid}, the agent's \
             own user, may use the agent"
        )),
        Err(e) => Err(format!(
            "refused a unix-socket connection whose peer credentials cannot be read: {e}"
        )),
    }
}

/// Closes a freshly bound Unix socket to everyone but its owner. The directory the simulator
/// puts it in is already private (0700); this is the second lock, and the peer-credential
/// check in [`Listener::accept`] the third.
fn restrict_socket(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
}

async fn remove_stale(path: &Path) -> Result<(), BindError> {
    if tokio::fs::symlink_metadata(path).await.is_err() {
        return Ok(());
    }
    if UnixStream::connect(path).await.is_ok() {
        return Err(BindError::InUse(path.to_owned()));
    }
    tokio::fs::remove_file(path)
        .await
        .map_err(|source| BindError::RemoveStale {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse_and_print_back() {
        for s in ["vsock:52", "vsock:0", "unix:/run/a.sock"] {
            assert_eq!(s.parse::<ListenAddr>().unwrap().to_string(), s);
        }
        assert!(matches!(
            "tcp:1".parse::<ListenAddr>(),
            Err(ParseListenError::Scheme(_))
        ));
        assert!(matches!(
            "vsock:x".parse::<ListenAddr>(),
            Err(ParseListenError::Port(_))
        ));
        assert!(matches!(
            "vsock:4294967295".parse::<ListenAddr>(),
            Err(ParseListenError::Port(_))
        ));
        assert!(matches!(
            "unix:".parse::<ListenAddr>(),
            Err(ParseListenError::EmptyPath)
        ));
    }

    #[tokio::test]
    async fn a_stale_socket_file_is_replaced_but_a_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sock");
        let addr = ListenAddr::Unix { path: path.clone() };
        {
            // A std listener dropped without removing its file leaves a stale socket.
            let _stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
        }
        assert!(path.exists());
        let live = Listener::bind(&addr).await.unwrap();
        assert!(matches!(
            Listener::bind(&addr).await,
            Err(BindError::InUse(_))
        ));
        drop(live);
        assert!(
            !path.exists(),
            "dropping the listener removes its socket file"
        );
    }

    #[test]
    fn only_the_host_cid_is_trusted_over_vsock() {
        assert!(trust_vsock_peer(VMADDR_CID_HOST).is_ok());
        for cid in [0, 1, 3, 42, u32::MAX] {
            let why = trust_vsock_peer(cid).unwrap_err();
            assert!(why.contains(&format!("CID {cid}")), "{why}");
        }
    }

    #[test]
    fn only_the_agents_own_user_is_trusted_over_a_unix_socket() {
        assert!(trust_unix_peer(Ok(0), 0).is_ok());
        assert!(trust_unix_peer(Ok(1000), 1000).is_ok());
        assert!(
            trust_unix_peer(Ok(65534), 0)
                .unwrap_err()
                .contains("uid 65534")
        );
        assert!(trust_unix_peer(Ok(0), 1000).is_err());
        assert!(trust_unix_peer(Err(std::io::Error::other("x")), 0).is_err());
    }

    #[tokio::test]
    async fn the_unix_socket_is_owner_only_and_serves_its_owner() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sock");
        let l = Listener::bind(&ListenAddr::Unix { path: path.clone() })
            .await
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let client = tokio::spawn({
            let path = path.clone();
            async move { UnixStream::connect(&path).await }
        });
        let accepted = tokio::time::timeout(std::time::Duration::from_secs(10), l.accept()).await;
        assert!(accepted.unwrap().is_ok(), "the agent's own user is served");
        client.await.unwrap().unwrap();
    }
}
