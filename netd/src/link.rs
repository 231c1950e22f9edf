//! Network devices over rtnetlink: the bridge, tap link state, and batch teardown.
//!
//! Deleting a network device costs the kernel an RCU grace period. One by one, 100 taps take
//! seconds on a loaded 2-core host; moved into one netdevice group and deleted with a single
//! `RTM_DELLINK` naming that group, they pay for one grace period. [`Links::delete_many`] does
//! that: moving a device between groups is cheap (no grace period). One worker task owns the
//! group, so no two teardowns share it, and it merges every deletion that waits while one runs
//! (concurrent `net.detach` calls of a batch `vm stop`) into the next group delete.
//!
//! A deletion answers as soon as the kernel has unlisted its devices, not after it has freed
//! them (an RCU barrier later): see [`crate::link_gone`].

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::link_gone::{DeleteConnection, RemovalWatch};

/// `ENODEV`, as netlink reports it (negated errno).
const ENODEV: i32 = libc::ENODEV;
/// `EEXIST`.
const EEXIST: i32 = libc::EEXIST;

/// Why a netlink operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The netlink socket could not be opened.
    #[error("opening a netlink socket")]
    Connect(#[source] std::io::Error),
    /// A request failed.
    #[error("netlink: {what}")]
    Request {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: rtnetlink::Error,
    },
    /// The bridge name is taken by another kind of device.
    #[error(
        "interface {name} exists but is not a bridge (it is {kind}); choose another [netd] bridge"
    )]
    NotABridge {
        /// The name.
        name: String,
        /// What it is.
        kind: String,
    },
    /// The teardown worker is gone (the connection is being dropped).
    #[error("the netlink teardown worker stopped")]
    WorkerGone,
    /// A device vanished right after being created or found.
    #[error("interface {0} disappeared while being set up")]
    Vanished(String),
}

/// What netd needs to know about a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Index of its bridge, if enslaved.
    pub master: Option<u32>,
    /// Netdevice group.
    pub group: u32,
    /// Administratively up.
    pub up: bool,
    /// Kind (`bridge`, `tun`, ...), when the kernel says.
    pub kind: Option<InfoKind>,
    /// MTU.
    pub mtu: Option<u32>,
}

impl Link {
    fn from_message(m: &LinkMessage) -> Option<Self> {
        let mut name = None;
        let mut master = None;
        let mut group = 0;
        let mut kind = None;
        let mut mtu = None;
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::Controller(i) => master = Some(*i),
                LinkAttribute::Group(g) => group = *g,
                LinkAttribute::Mtu(v) => mtu = Some(*v),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Kind(k) = i {
                            kind = Some(k.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        Some(Self {
            index: m.header.index,
            name: name?,
            master,
            group,
            up: m.header.flags.contains(LinkFlags::Up),
            kind,
            mtu,
        })
    }
}

/// Whether `e` is the kernel saying `errno`.
fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code().abs() == errno)
}

/// A create that may find its object already there (`EEXIST`) is a success; any other error
/// is `what` failing.
fn exists_ok(
    result: Result<(), rtnetlink::Error>,
    what: impl FnOnce() -> String,
) -> Result<(), LinkError> {
    match result {
        Err(e) if !is_errno(&e, EEXIST) => Err(LinkError::Request {
            what: what(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// A netlink connection. The connection task and the teardown worker end when this is dropped.
pub struct Links {
    handle: Handle,
    /// Deletes, and knows when they are done.
    deleter: Deleter,
    conn: JoinHandle<()>,
    /// Deletions waiting for the teardown worker.
    jobs: mpsc::UnboundedSender<DeleteJob>,
    worker: JoinHandle<()>,
    /// Kernel delete operations issued (one per group delete or single-device delete).
    delete_ops: Arc<AtomicU64>,
    /// One dump at a time: the kernel answers a second dump on the same netlink socket with
    /// `EBUSY` while the first is in progress (concurrent detaches each list the interfaces).
    dump: Mutex<()>,
}

impl Drop for Links {
    fn drop(&mut self) {
        self.worker.abort();
        self.conn.abort();
    }
}

/// Devices one caller wants deleted, and where to say how many were.
struct DeleteJob {
    names: Vec<String>,
    group: u32,
    done: oneshot::Sender<Result<HashSet<String>, LinkError>>,
}

impl Links {
    /// Opens a netlink socket in the calling thread's network namespace. Call inside a tokio
    /// runtime.
    pub fn connect() -> Result<Self, LinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(LinkError::Connect)?;
        let conn = tokio::spawn(conn);
        let deleter = Deleter {
            main: handle.clone(),
            del: DeleteConnection::start()
                .map_err(LinkError::Connect)?
                .handle()
                .clone(),
            watch: Arc::new(RemovalWatch::start().map_err(LinkError::Connect)?),
        };
        let (jobs, rx) = mpsc::unbounded_channel();
        let delete_ops = Arc::new(AtomicU64::new(0));
        let worker = tokio::spawn(teardown_worker(deleter.clone(), rx, delete_ops.clone()));
        Ok(Self {
            handle,
            deleter,
            conn,
            jobs,
            worker,
            delete_ops,
            dump: Mutex::new(()),
        })
    }

    /// How many deletions answered as soon as the kernel had unlisted their devices, instead
    /// of waiting for its acknowledgement (see [`crate::link_gone`]).
    pub fn answered_on_unlisting(&self) -> u64 {
        self.deleter.watch.answered_early()
    }

    /// How many kernel delete operations this connection has issued so far.
    pub fn delete_ops(&self) -> u64 {
        self.delete_ops.load(Ordering::Relaxed)
    }

    fn req(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> LinkError {
        let what = what.into();
        move |source| LinkError::Request { what, source }
    }

    /// Every device.
    pub async fn list(&self) -> Result<Vec<Link>, LinkError> {
        let _one_dump = self.dump.lock().await;
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(Self::req("listing interfaces"))?;
        Ok(msgs.iter().filter_map(Link::from_message).collect())
    }

    /// The device called `name`, if any.
    pub async fn by_name(&self, name: &str) -> Result<Option<Link>, LinkError> {
        let mut s = self.handle.link().get().match_name(name).execute();
        match s.try_next().await {
            Ok(m) => Ok(m.as_ref().and_then(Link::from_message)),
            Err(e) if is_errno(&e, ENODEV) => Ok(None),
            Err(e) => Err(LinkError::Request {
                what: format!("looking up interface {name}"),
                source: e,
            }),
        }
    }

    /// Makes sure bridge `name` exists with `gateway/prefix_len`, the MTU, and is up; returns its
    /// index.
    pub async fn ensure_bridge(
        &self,
        name: &str,
        gateway: Ipv4Addr,
        prefix_len: u8,
        mtu: u32,
    ) -> Result<u32, LinkError> {
        let link = match self.by_name(name).await? {
            Some(l) => l,
            None => {
                // Created concurrently by someone else: fine, it is checked below.
                exists_ok(
                    self.handle
                        .link()
                        .add(LinkBridge::new(name).mtu(mtu).build())
                        .execute()
                        .await,
                    || format!("creating bridge {name}"),
                )?;
                tracing::info!(bridge = name, "created the bridge");
                self.by_name(name)
                    .await?
                    .ok_or_else(|| LinkError::Vanished(name.to_owned()))?
            }
        };
        if link.kind != Some(InfoKind::Bridge) {
            return Err(LinkError::NotABridge {
                name: name.to_owned(),
                kind: link
                    .kind
                    .map_or_else(|| "of unknown kind".to_owned(), |k| k.to_string()),
            });
        }
        let one_dump = self.dump.lock().await;
        let has_addr = self
            .handle
            .address()
            .get()
            .set_link_index_filter(link.index)
            .execute()
            .try_collect::<Vec<_>>()
            .await
            .map_err(Self::req(format!("reading the addresses of {name}")))?
            .iter()
            .any(|m| {
                m.header.prefix_len == prefix_len
                    && m.attributes.iter().any(
                        |a| matches!(a, AddressAttribute::Local(IpAddr::V4(ip)) if *ip == gateway),
                    )
            });
        drop(one_dump);
        if !has_addr {
            exists_ok(
                self.handle
                    .address()
                    .add(link.index, IpAddr::V4(gateway), prefix_len)
                    .execute()
                    .await,
                || format!("adding {gateway}/{prefix_len} to {name}"),
            )?;
        }
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(link.index).mtu(mtu).up().build())
            .execute()
            .await
            .map_err(Self::req(format!("bringing bridge {name} up")))?;
        Ok(link.index)
    }

    /// Enslaves `tap` to the bridge, sets its MTU and brings it up (all idempotent).
    pub async fn join_bridge(&self, tap: u32, bridge: u32, mtu: u32) -> Result<(), LinkError> {
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(tap)
                    .controller(bridge)
                    .mtu(mtu)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(Self::req(format!("adding interface {tap} to the bridge")))
    }

    /// Deletes one device; `Ok(false)` when it was already gone.
    pub async fn delete(&self, index: u32) -> Result<bool, LinkError> {
        self.delete_ops.fetch_add(1, Ordering::Relaxed);
        self.deleter.one(index).await
    }

    /// Deletes the devices called `names`, paying for as few kernel operations as possible;
    /// returns the names that existed (and so were deleted). Devices already gone are skipped.
    /// Names, not indexes: a caller needs no interface listing first (a dump, which the kernel
    /// allows only one of at a time per socket).
    ///
    /// The devices of every call that is waiting while a deletion runs are deleted together in
    /// the next one (group commit): each is moved into netdevice group `group` (cheap, no grace
    /// period), then the whole group goes with one `RTM_DELLINK`. A call that finds the worker
    /// idle is served at once, so a lone detach waits for nobody.
    pub async fn delete_many(
        &self,
        names: &[String],
        group: u32,
    ) -> Result<HashSet<String>, LinkError> {
        if names.is_empty() {
            return Ok(HashSet::new());
        }
        let (done, rx) = oneshot::channel();
        self.jobs
            .send(DeleteJob {
                names: names.to_vec(),
                group,
                done,
            })
            .map_err(|_| LinkError::WorkerGone)?;
        rx.await.map_err(|_| LinkError::WorkerGone)?
    }

    /// Deletes every device in `group` (nothing when it is empty).
    pub async fn delete_group(&self, group: u32) -> Result<(), LinkError> {
        self.delete_ops.fetch_add(1, Ordering::Relaxed);
        self.deleter.group(group, &[]).await
    }
}

/// The deleting half of [`Links`]: requests go out on their own connection, and each answers
/// once its devices are unlisted (see [`crate::link_gone`]).
#[derive(Clone)]
struct Deleter {
    /// The shared connection, for lookups and group moves.
    main: Handle,
    /// The deleting connection.
    del: Handle,
    watch: Arc<RemovalWatch>,
}

impl Deleter {
    /// Deletes device `index`; `Ok(false)` when it was already gone.
    async fn one(&self, index: u32) -> Result<bool, LinkError> {
        let request = self.del.link().del(index).execute();
        match self.watch.delete(&[index], request).await {
            Ok(()) => Ok(true),
            Err(e) if is_errno(&e, ENODEV) => Ok(false),
            Err(e) => Err(LinkError::Request {
                what: format!("deleting interface {index}"),
                source: e,
            }),
        }
    }

    /// Deletes every device in `group` (nothing when it is empty); `members` are the indexes
    /// known to be in it, whose unlisting is waited for instead of the kernel's answer.
    async fn group(&self, group: u32, members: &[u32]) -> Result<(), LinkError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::Group(group));
        let request = self.del.link().del_with_message(msg).execute();
        match self.watch.delete(members, request).await {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, ENODEV) => Ok(()),
            Err(e) => Err(LinkError::Request {
                what: format!("deleting netdevice group {group}"),
                source: e,
            }),
        }
    }

    /// The index of the device called `name`, if there is one.
    async fn index_of(&self, name: &str) -> Result<Option<u32>, LinkError> {
        let mut s = self.main.link().get().match_name(name).execute();
        match s.try_next().await {
            Ok(m) => Ok(m.map(|m| m.header.index)),
            Err(e) if is_errno(&e, ENODEV) => Ok(None),
            Err(e) => Err(LinkError::Request {
                what: format!("looking up interface {name}"),
                source: e,
            }),
        }
    }

    /// Deletes the device called `name`; `Ok(false)` when there is none.
    async fn named(&self, name: &str) -> Result<bool, LinkError> {
        match self.index_of(name).await? {
            Some(index) => self.one(index).await,
            None => Ok(false),
        }
    }

    /// Moves `names` into `group` and deletes the group; returns the names that existed.
    async fn batch(
        &self,
        names: &[String],
        group: u32,
        ops: &AtomicU64,
    ) -> Result<HashSet<String>, LinkError> {
        if let [one] = names {
            ops.fetch_add(1, Ordering::Relaxed);
            let existed = self.named(one).await?;
            return Ok(if existed {
                HashSet::from([one.clone()])
            } else {
                HashSet::new()
            });
        }
        let mut moved = HashSet::new();
        let mut indexes = Vec::new();
        for name in names {
            let Some(index) = self.index_of(name).await? else {
                continue;
            };
            match self
                .main
                .link()
                .set(LinkUnspec::new_with_index(index).link_group(group).build())
                .execute()
                .await
            {
                Ok(()) => {
                    moved.insert(name.clone());
                    indexes.push(index);
                }
                Err(e) if is_errno(&e, ENODEV) => {}
                Err(e) => {
                    return Err(LinkError::Request {
                        what: format!("moving interface {name} into teardown group {group}"),
                        source: e,
                    });
                }
            }
        }
        if !moved.is_empty() {
            ops.fetch_add(1, Ordering::Relaxed);
            self.group(group, &indexes).await?;
        }
        Ok(moved)
    }
}

/// Serves [`Links::delete_many`]: takes every job waiting, deletes their devices together, and
/// answers each. When a merged batch fails, each job is retried on its own so every caller gets
/// its own answer (and one bad device does not fail the others).
async fn teardown_worker(
    deleter: Deleter,
    mut rx: mpsc::UnboundedReceiver<DeleteJob>,
    ops: Arc<AtomicU64>,
) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while let Ok(more) = rx.try_recv() {
            jobs.push(more);
        }
        let mut groups: BTreeMap<u32, Vec<DeleteJob>> = BTreeMap::new();
        for j in jobs {
            groups.entry(j.group).or_default().push(j);
        }
        for (group, jobs) in groups {
            let mut all: Vec<String> = jobs.iter().flat_map(|j| j.names.iter().cloned()).collect();
            all.sort_unstable();
            all.dedup();
            match deleter.batch(&all, group, &ops).await {
                Ok(gone) => {
                    for j in jobs {
                        let mine = j
                            .names
                            .iter()
                            .filter(|n| gone.contains(*n))
                            .cloned()
                            .collect();
                        let _ = j.done.send(Ok(mine));
                    }
                }
                Err(e) if jobs.len() == 1 => {
                    if let Some(j) = jobs.into_iter().next() {
                        let _ = j.done.send(Err(e));
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, jobs = jobs.len(), "merged teardown failed; retrying each");
                    for j in jobs {
                        let r = deleter.batch(&j.names, group, &ops).await;
                        let _ = j.done.send(r);
                    }
                }
            }
        }
    }
}
