//! Knowing that a device is gone as soon as the kernel has taken it away, not ~20 ms later.
//!
//! Deleting a network device happens in two parts, both inside the `RTM_DELLINK` request. Under
//! the RTNL lock the kernel unlists the device (its name and index are free, it is off its
//! bridge, `ip link` no longer shows it) and announces that with an `RTM_DELLINK` notification
//! to the `RTNLGRP_LINK` group. Then, after the lock is released, it waits for an RCU barrier
//! and for the last references before freeing the memory — 15–25 ms on this machine kind, about
//! four fifths of a tap's deletion — and only then acknowledges the request. Nothing anyone can
//! observe changes in that tail, and nothing can fail in it.
//!
//! So a deletion answers at whichever comes first: the notification for every device it named
//! (by index: indexes are allocated cyclically, never reused soon), or the request's own
//! acknowledgement (an error, a device already gone, or a notification lost to a full socket
//! buffer). The request itself runs on a connection driven by a thread of its own
//! ([`DeleteConnection`]), because the kernel does all of that work inside the `sendmsg` call
//! that carries it: on a runtime worker it would stall every other task for the tail.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt as _;
use futures::future::join_all;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::sys::AsyncSocket as _;
use rtnetlink::{Handle, MulticastGroup};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Receive buffer of the notification socket: room for the link notifications of hundreds of
/// devices changing at once. An overrun loses notifications, never correctness (see above).
const MONITOR_RX_BUF: usize = 4 << 20;

/// Waiters for the removal of devices, by index.
type Waiters = Arc<Mutex<HashMap<u32, Vec<oneshot::Sender<()>>>>>;

/// Watches `RTM_DELLINK` notifications in the namespace it was created in. Its tasks end
/// when this is dropped.
pub(crate) struct RemovalWatch {
    waiters: Waiters,
    task: JoinHandle<()>,
    conn: JoinHandle<()>,
    /// Deletions answered by the notifications (not by the kernel's acknowledgement).
    early: AtomicU64,
}

impl Drop for RemovalWatch {
    fn drop(&mut self) {
        self.task.abort();
        self.conn.abort();
    }
}

impl RemovalWatch {
    /// Subscribes to link notifications in the calling thread's network namespace. Call inside
    /// a tokio runtime.
    pub(crate) fn start() -> std::io::Result<Self> {
        let (mut conn, _handle, mut messages) =
            rtnetlink::new_multicast_connection(&[MulticastGroup::Link])?;
        conn.socket_mut()
            .socket_mut()
            .set_rx_buf_sz(MONITOR_RX_BUF)?;
        let waiters: Waiters = Arc::default();
        let mine = Arc::clone(&waiters);
        let conn = tokio::spawn(conn);
        let task = tokio::spawn(async move {
            while let Some((msg, _)) = messages.next().await {
                // The generic notification (family unspec), the last one the kernel sends for
                // a device it unregisters; a bridge port's own (AF_BRIDGE) comes before it.
                if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) =
                    msg.payload
                    && link.header.interface_family == AddressFamily::Unspec
                {
                    let woken = mine
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&link.header.index);
                    for tx in woken.into_iter().flatten() {
                        let _ = tx.send(());
                    }
                }
            }
            tracing::warn!(
                "the netlink link notification socket closed; deletions now wait for the kernel's acknowledgement"
            );
        });
        Ok(Self {
            waiters,
            task,
            conn,
            early: AtomicU64::new(0),
        })
    }

    /// Runs `request`, which deletes the devices `indexes` (and maybe others), and returns as
    /// soon as every one of them is unlisted or the request has answered, whichever is first.
    pub(crate) async fn delete<F>(
        &self,
        indexes: &[u32],
        request: F,
    ) -> Result<(), rtnetlink::Error>
    where
        F: Future<Output = Result<(), rtnetlink::Error>>,
    {
        if indexes.is_empty() {
            return request.await;
        }
        let _registered = Registered {
            waiters: &self.waiters,
            indexes,
        };
        let gone = {
            let mut w = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            let rxs: Vec<_> = indexes
                .iter()
                .map(|i| {
                    let (tx, rx) = oneshot::channel();
                    w.entry(*i).or_default().push(tx);
                    rx
                })
                .collect();
            join_all(rxs)
        };
        let mut request = std::pin::pin!(request);
        tokio::select! {
            biased;
            r = &mut request => return r,
            all = gone => if all.iter().all(Result::is_ok) {
                tracing::trace!(devices = indexes.len(), "unlisted; not waiting for the kernel to free them");
                self.early.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            },
        }
        // The watch stopped before every notification came: the request answers.
        request.await
    }
}

impl RemovalWatch {
    /// How many deletions were answered by the notifications so far.
    pub(crate) fn answered_early(&self) -> u64 {
        self.early.load(Ordering::Relaxed)
    }
}

/// Unregisters closed waiters of a finished deletion (those woken are gone already).
struct Registered<'a> {
    waiters: &'a Waiters,
    indexes: &'a [u32],
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut w = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        for i in self.indexes {
            if let Some(list) = w.get_mut(i) {
                list.retain(|tx| !tx.is_closed());
                if list.is_empty() {
                    w.remove(i);
                }
            }
        }
    }
}

/// A netlink connection that only deletes, driven by a thread of its own (see the module
/// docs). Created in the calling thread's network namespace: the thread inherits it.
pub(crate) struct DeleteConnection {
    handle: Handle,
}

impl DeleteConnection {
    /// Starts the thread and its connection.
    pub(crate) fn start() -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("netd-link-delete".to_owned())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                // The socket registers with the runtime that creates it: this one.
                let conn = rt.block_on(async { rtnetlink::new_connection() });
                match conn {
                    Ok((conn, handle, _)) => {
                        if tx.send(Ok(handle)).is_ok() {
                            // Ends when every handle is gone.
                            rt.block_on(conn);
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })?;
        let handle = rx.recv().map_err(|_| {
            std::io::Error::other("the netlink delete thread died while starting")
        })??;
        Ok(Self { handle })
    }

    /// The connection's handle.
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }
}
