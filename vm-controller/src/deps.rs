//! The controller's peers, behind small traits: stord (volumes), netd (leases and taps), the
//! guest agent (health, exec), the other controllers (lab-wide unique names) and the event
//! stream. The real implementations talk over the bus or hybrid vsock; unit tests use doubles.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger_agent_client::AgentClient;
use banger_bus::{Bus, RequestError};
use banger_proto::agent::{ExecRequest, ExecResult, Health};
use banger_proto::event::{EventKind, VmEvent};
use banger_proto::net::{AttachRequest, DetachReply, DetachRequest, Lease};
use banger_proto::op::{self, Lab, Operation};
use banger_proto::store::{
    ImageInfo, ImageRefRequest, VolumeCreateRequest, VolumeDeleteReply, VolumeDeleteRequest,
    VolumeResizeRequest, VolumeSet,
};
use banger_proto::vm::{ListVmsRequest, VmInfo};
use banger_proto::{ApiError, ErrorCode, HostId, ImageName, MemMib, VmId, VmName};
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

use crate::names::{DirectoryError, NameDirectory, SyncReport};
use crate::store::{Store, StoreError, VmRecord};

pub use crate::names::Claim;

/// A failed request to a peer: which one, what for, and why.
#[derive(Debug, thiserror::Error)]
#[error("{service} {op}")]
pub struct DepError {
    /// The peer (`stord`, `netd`, `agent`).
    pub service: &'static str,
    /// The operation.
    pub op: &'static str,
    /// Why it failed.
    #[source]
    pub cause: PeerFailure,
}

/// Why a request to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerFailure {
    /// The peer answered with an error: its code is passed on.
    #[error("{}", .0.message)]
    Answered(ApiError),
    /// Nobody answered: the peer is not running on this host.
    #[error("{service} is not running on this host")]
    NotRunning {
        /// The peer.
        service: &'static str,
    },
    /// The request did not get an answer (timeout, transport, encoding).
    #[error(transparent)]
    Request(RequestError),
    /// The guest agent could not be reached or refused.
    #[error(transparent)]
    Agent(banger_agent_client::ClientError),
}

impl DepError {
    /// The peer answered `op` with `code` and `message` (test doubles build their refusals
    /// with this).
    pub fn new(
        service: &'static str,
        op: &'static str,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Self {
        Self {
            service,
            op,
            cause: PeerFailure::Answered(ApiError::new(code, message)),
        }
    }

    /// A typed request's failure.
    pub fn from_request(service: &'static str, op: &'static str, e: RequestError) -> Self {
        let cause = match e {
            RequestError::Remote(api) => PeerFailure::Answered(api),
            RequestError::NoResponders { .. } => PeerFailure::NotRunning { service },
            other => PeerFailure::Request(other),
        };
        Self { service, op, cause }
    }

    /// A request to the guest agent failed.
    pub fn agent(op: &'static str, e: banger_agent_client::ClientError) -> Self {
        Self {
            service: "agent",
            op,
            cause: PeerFailure::Agent(e),
        }
    }

    /// The code to pass on: the peer's own when it answered, else what the failure means here
    /// (`unavailable` when it could not be reached, `timeout`, ...).
    pub fn code(&self) -> ErrorCode {
        self.cause.code()
    }
}

impl PeerFailure {
    /// See [`DepError::code`].
    pub fn code(&self) -> ErrorCode {
        use banger_agent_client::ClientError as E;
        use banger_proto::agent::AgentErrorCode as A;
        match self {
            Self::Answered(api) => api.code,
            Self::NotRunning { .. } => ErrorCode::Unavailable,
            Self::Request(e) => e.code(),
            Self::Agent(E::Agent { code, .. }) => match code {
                A::InvalidArgument | A::CommandNotFound | A::BadWorkingDirectory | A::TooLarge => {
                    ErrorCode::InvalidArgument
                }
                A::ExecDisabled => ErrorCode::PermissionDenied,
                _ => ErrorCode::Internal,
            },
            Self::Agent(E::Timeout { .. }) => ErrorCode::Timeout,
            Self::Agent(_) => ErrorCode::Unavailable,
        }
    }
}

/// stord, as the controller uses it.
pub trait StoreApi: Send + Sync + 'static {
    /// The image, or `not_found`.
    fn image_show(&self, image: &ImageName) -> BoxFuture<'_, Result<ImageInfo, DepError>>;
    /// Creates (or returns the existing) root and work disk of a VM.
    fn volume_create(&self, req: VolumeCreateRequest)
    -> BoxFuture<'_, Result<VolumeSet, DepError>>;
    /// Removes a VM's volumes (stord retries transient busy errors).
    fn volume_delete(&self, vm: &VmId) -> BoxFuture<'_, Result<VolumeDeleteReply, DepError>>;
    /// Grows a VM's work disk.
    fn volume_resize(
        &self,
        vm: &VmId,
        disk_mib: MemMib,
    ) -> BoxFuture<'_, Result<VolumeSet, DepError>>;
}

/// netd, as the controller uses it.
pub trait NetApi: Send + Sync + 'static {
    /// Allocates (or returns) the VM's lease and creates its tap.
    fn attach(&self, req: AttachRequest) -> BoxFuture<'_, Result<Lease, DepError>>;
    /// Removes the tap (and releases the lease when asked).
    fn detach(&self, req: DetachRequest) -> BoxFuture<'_, Result<DetachReply, DepError>>;
}

/// The guest agent, reached through the VM's vsock socket.
pub trait AgentApi: Send + Sync + 'static {
    /// `GET /healthz`.
    fn health(&self, vsock_uds: PathBuf, port: u32) -> BoxFuture<'_, Result<Health, DepError>>;
    /// Runs a command to completion.
    fn exec(
        &self,
        vsock_uds: PathBuf,
        port: u32,
        req: ExecRequest,
    ) -> BoxFuture<'_, Result<ExecResult, DepError>>;
}

/// The other controllers of the lab: VM names unique across it (see [`crate::names`]).
pub trait LabApi: Send + Sync + 'static {
    /// Claims `name` for this host's new VM `id`, before its record is written.
    fn claim_name(&self, name: &VmName, id: &VmId) -> BoxFuture<'_, Claim>;
    /// Points `name` at this host's VM `id`, now recorded (after [`Claim::Here`]).
    fn adopt_name(&self, name: &VmName, id: &VmId) -> BoxFuture<'_, ()>;
    /// Gives `name` back: VM `id` was deleted, or was not recorded after all.
    fn release_name(&self, name: &VmName, id: &VmId) -> BoxFuture<'_, ()>;
    /// Brings the lab's record of names in line with this host's VMs `local`, when an earlier
    /// step could not update it (and once at start-up).
    fn sync_names(&self, local: Vec<(VmName, VmId)>) -> BoxFuture<'_, ()>;
}

/// Where lifecycle events go.
pub trait EventSink: Send + Sync + 'static {
    /// Publishes one event.
    fn publish(&self, event: VmEvent) -> BoxFuture<'_, Result<(), String>>;
}

/// Numbers and publishes lifecycle events: one increasing sequence per host, persisted, and
/// published in sequence order. A state change numbers its event in its own write transaction
/// ([`Events::commit`]); an event that reports no stored change is numbered alone
/// ([`Events::emit`]).
///
/// Order without a lock: each numbered write hands its event to one publisher queue from the
/// store's `committed` callback, which runs right after the commit while the writer connection
/// is still held, so events enter the queue in sequence order; one task publishes the queue in
/// that order. Concurrent operations therefore only take turns for the write itself (a lock
/// held across the write *and* the publication made 100 concurrent starts queue for ~0.8 s
/// before their first event). The caller still waits until its event was handed to the bus
/// before it goes on, as before, so an event is never behind the reply of its operation.
#[derive(Clone)]
pub struct Events {
    store: Store,
    queue: mpsc::UnboundedSender<Queued>,
    /// The queue's receiving end and the sink, until the publisher task starts (with the first
    /// event: [`Events::new`] may run outside a runtime).
    publisher: Arc<Mutex<Option<Publisher>>>,
}

/// The publisher task's inputs.
struct Publisher {
    queue: mpsc::UnboundedReceiver<Queued>,
    sink: Arc<dyn EventSink>,
}

/// One numbered event waiting for publication.
struct Queued {
    event: VmEvent,
    /// The operation's span: the publication is its child, as if the operation published.
    span: tracing::Span,
    published: oneshot::Sender<()>,
}

/// Queues one event for publication: given to the store as its `committed` callback, so it runs
/// in sequence order ([`Handoff::post`]).
pub struct Handoff {
    kind: EventKind,
    queue: mpsc::UnboundedSender<Queued>,
    span: tracing::Span,
    published: oneshot::Sender<()>,
}

impl Handoff {
    /// Queues the event `seq` reporting `vm`.
    pub fn post(self, vm: &VmInfo, seq: u64) {
        let event = VmEvent {
            kind: self.kind,
            at_ms: banger_bus::now_ms(),
            seq,
            vm: vm.clone(),
        };
        let queued = Queued {
            event,
            span: self.span,
            published: self.published,
        };
        if self.queue.send(queued).is_err() {
            tracing::warn!(kind = %self.kind, vm.id = %vm.id, seq, "the event publisher has stopped; event not published");
        }
    }
}

impl Events {
    /// Events numbered from `store`'s sequence, published to `sink`.
    pub fn new(sink: Arc<dyn EventSink>, store: Store) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        Self {
            store,
            queue,
            publisher: Arc::new(Mutex::new(Some(Publisher { queue: rx, sink }))),
        }
    }

    /// A handoff for one event of `kind`, and what resolves once it was given to the sink.
    fn handoff(&self, kind: EventKind) -> (Handoff, oneshot::Receiver<()>) {
        let idle = self
            .publisher
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(p) = idle {
            tokio::spawn(publish_in_order(p));
        }
        let (published, done) = oneshot::channel();
        let handoff = Handoff {
            kind,
            queue: self.queue.clone(),
            span: tracing::Span::current(),
            published,
        };
        (handoff, done)
    }

    /// Publishes `kind` with snapshot `vm`, numbered in a transaction of its own. A failure is
    /// logged, never fatal: the transition already happened, and peers reconcile.
    pub async fn emit(&self, kind: EventKind, vm: &VmInfo) {
        let (handoff, published) = self.handoff(kind);
        let info = vm.clone();
        match self
            .store
            .next_event_seq(move |seq| handoff.post(&info, seq))
            .await
        {
            Ok(_) => {
                let _ = published.await;
            }
            Err(e) => {
                tracing::warn!(error = %banger_bus::runtime::chain(&e), %kind, vm.id = %vm.id, "numbering an event failed");
            }
        }
    }

    /// Runs `change`, a store write that numbers its event in the same transaction (the
    /// store's `*_numbered` calls) and posts it with the [`Handoff`] it is given, then waits
    /// until that event was handed to the bus. A failed change publishes nothing and is
    /// returned; a failed publication is logged (peers reconcile).
    pub async fn commit<C, F>(&self, kind: EventKind, change: C) -> Result<VmRecord, StoreError>
    where
        C: FnOnce(Handoff) -> F,
        F: std::future::Future<Output = Result<(VmRecord, u64), StoreError>>,
    {
        let (handoff, published) = self.handoff(kind);
        let (rec, _seq) = change(handoff).await?;
        // Only a stopped publisher (the runtime shutting down) drops it unanswered.
        let _ = published.await;
        Ok(rec)
    }
}

/// The publisher task: publishes queued events one after the other, in queue (sequence) order,
/// until every [`Events`] is gone.
async fn publish_in_order(mut p: Publisher) {
    while let Some(q) = p.queue.recv().await {
        let (kind, seq) = (q.event.kind, q.event.seq);
        let (id, name) = (q.event.vm.id.clone(), q.event.vm.name.clone());
        let published = p.sink.publish(q.event).instrument(q.span.clone()).await;
        q.span.in_scope(|| {
            tracing::debug!(%kind, seq, vm.id = %id, vm.name = %name, "event");
            if let Err(e) = &published {
                tracing::warn!(error = %e, %kind, vm.id = %id, "publishing an event failed");
            }
        });
        let _ = q.published.send(());
    }
}

/// A per-host peer (stord, netd) over the bus: every request is a typed call of a
/// [`banger_proto::op`] operation addressed to this host.
#[derive(Debug, Clone)]
pub struct BusPeer {
    /// The bus.
    pub bus: Bus,
    /// This host (stord and netd are per host).
    pub host: HostId,
    /// Request deadline.
    pub timeout: Duration,
}

impl BusPeer {
    /// Calls `O` on this host's instance of its service; a failure names the service and the
    /// operation and keeps the peer's error code.
    async fn call<O: Operation<At = HostId>>(&self, req: O::Request) -> Result<O::Reply, DepError> {
        self.bus
            .call::<O>(&self.host, &req, self.timeout)
            .await
            .map_err(|e| DepError::from_request(O::SERVICE, O::ENDPOINT, e))
    }
}

/// stord over the bus.
pub type BusStore = BusPeer;

impl StoreApi for BusPeer {
    fn image_show(&self, image: &ImageName) -> BoxFuture<'_, Result<ImageInfo, DepError>> {
        let req = ImageRefRequest {
            name: image.clone(),
        };
        Box::pin(self.call::<op::store::ImageShow>(req))
    }

    fn volume_create(
        &self,
        req: VolumeCreateRequest,
    ) -> BoxFuture<'_, Result<VolumeSet, DepError>> {
        Box::pin(self.call::<op::store::VolumeCreate>(req))
    }

    fn volume_delete(&self, vm: &VmId) -> BoxFuture<'_, Result<VolumeDeleteReply, DepError>> {
        let req = VolumeDeleteRequest { vm_id: vm.clone() };
        Box::pin(self.call::<op::store::VolumeDelete>(req))
    }

    fn volume_resize(
        &self,
        vm: &VmId,
        disk_mib: MemMib,
    ) -> BoxFuture<'_, Result<VolumeSet, DepError>> {
        let req = VolumeResizeRequest {
            vm_id: vm.clone(),
            disk_mib,
        };
        Box::pin(self.call::<op::store::VolumeResize>(req))
    }
}

/// netd over the bus.
pub type BusNet = BusPeer;

impl NetApi for BusPeer {
    fn attach(&self, req: AttachRequest) -> BoxFuture<'_, Result<Lease, DepError>> {
        Box::pin(self.call::<op::net::Attach>(req))
    }

    fn detach(&self, req: DetachRequest) -> BoxFuture<'_, Result<DetachReply, DepError>> {
        Box::pin(self.call::<op::net::Detach>(req))
    }
}

/// The guest agent over hybrid vsock.
#[derive(Debug, Clone, Default)]
pub struct VsockAgent;

impl AgentApi for VsockAgent {
    fn health(&self, vsock_uds: PathBuf, port: u32) -> BoxFuture<'_, Result<Health, DepError>> {
        Box::pin(async move {
            AgentClient::new(vsock_uds, port)
                .health()
                .await
                .map_err(|e| DepError::agent("health", e))
        })
    }

    fn exec(
        &self,
        vsock_uds: PathBuf,
        port: u32,
        req: ExecRequest,
    ) -> BoxFuture<'_, Result<ExecResult, DepError>> {
        Box::pin(async move {
            AgentClient::new(vsock_uds, port)
                .exec_collect(&req)
                .await
                .map_err(|e| DepError::agent("exec", e))
        })
    }
}

/// The other controllers: the name directory ([`NameDirectory`]), and when it cannot be used
/// (no JetStream, a timeout) one `vm.list` gather filtered by the name, as before the
/// directory. The gather waits for as many answers as controllers were last discovered (kept
/// fresh by the reconcile loop), so on a single host it is skipped. A directory step that
/// failed leaves the directory to the next [`LabApi::sync_names`].
#[derive(Debug)]
pub struct BusLab {
    /// The bus.
    pub bus: Bus,
    /// This host.
    pub host: HostId,
    /// The directory.
    pub names: NameDirectory,
    /// How many controllers answered the last `$SRV.PING`.
    pub controllers: Arc<AtomicUsize>,
    /// Longest wait for the answers.
    pub deadline: Duration,
    /// Whether the directory may be out of line with this host's VMs.
    pub needs_sync: AtomicBool,
}

impl BusLab {
    /// The lab of `host` on `bus`.
    pub fn new(bus: Bus, host: HostId, controllers: Arc<AtomicUsize>, deadline: Duration) -> Self {
        Self {
            names: NameDirectory::new(bus.clone(), host.clone()),
            bus,
            host,
            controllers,
            deadline,
            needs_sync: AtomicBool::new(true),
        }
    }

    fn failed(&self, name: &VmName, e: &DirectoryError) {
        tracing::warn!(vm.name = %name, error = %e, "name directory; it is brought in line later");
        self.needs_sync.store(true, Ordering::Relaxed);
    }

    /// A VM named `name` on another host, if any answered with one.
    async fn find_name(&self, name: &VmName) -> Option<(HostId, VmId)> {
        let expect = self.controllers.load(Ordering::Relaxed);
        if expect <= 1 {
            // Only this controller is known: the local unique index is the whole check.
            return None;
        }
        let replies = self
            .bus
            .gather::<op::vm::List>(
                &Lab,
                &ListVmsRequest::matching([name.as_str()]),
                Some(expect),
                self.deadline,
            )
            .await
            .ok()?;
        replies
            .into_iter()
            .filter_map(Result::ok)
            .filter(|r| r.host != self.host)
            .flat_map(|r| r.vms)
            .find(|v| &v.name == name)
            .map(|v| (v.host, v.id))
    }
}

impl LabApi for BusLab {
    fn claim_name(&self, name: &VmName, id: &VmId) -> BoxFuture<'_, Claim> {
        let (name, id) = (name.clone(), id.clone());
        Box::pin(async move {
            match self.names.claim(&name, &id).await {
                Ok(claim) => claim,
                Err(e) => {
                    self.failed(&name, &e);
                    match self.find_name(&name).await {
                        Some((host, id)) => Claim::Taken { host, id },
                        None => Claim::Here,
                    }
                }
            }
        })
    }

    fn adopt_name(&self, name: &VmName, id: &VmId) -> BoxFuture<'_, ()> {
        let (name, id) = (name.clone(), id.clone());
        Box::pin(async move {
            if let Err(e) = self.names.adopt(&name, &id).await {
                self.failed(&name, &e);
            }
        })
    }

    fn release_name(&self, name: &VmName, id: &VmId) -> BoxFuture<'_, ()> {
        let (name, id) = (name.clone(), id.clone());
        Box::pin(async move {
            if let Err(e) = self.names.release(&name, &id).await {
                self.failed(&name, &e);
            }
        })
    }

    fn sync_names(&self, local: Vec<(VmName, VmId)>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if !self.needs_sync.swap(false, Ordering::Relaxed) {
                return;
            }
            match self.names.sync(&local).await {
                Ok(report) if report == SyncReport::default() => {}
                Ok(report) => tracing::info!(?report, "name directory brought in line"),
                Err(e) => {
                    tracing::debug!(error = %e, "name directory not brought in line; trying again later");
                    self.needs_sync.store(true, Ordering::Relaxed);
                }
            }
        })
    }
}

/// Events onto the bus.
#[derive(Debug, Clone)]
pub struct BusEvents {
    /// The bus.
    pub bus: Bus,
    /// This host.
    pub host: HostId,
}

impl EventSink for BusEvents {
    fn publish(&self, event: VmEvent) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.bus
                .publish_event(&self.host, &event)
                .await
                .map_err(|e| banger_bus::runtime::chain(&e))
        })
    }
}
