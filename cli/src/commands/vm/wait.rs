//! `vm create --wait`: wait for the guest agent's first healthy answer.
//!
//! The controller probes the agent after a boot and publishes a `health` event when it first
//! answers healthy; a guest that dies is published as `failed`. [`HealthEvents`] subscribes to
//! both BEFORE the create is sent, so neither can be missed, and [`wait_healthy`] asks for the
//! health (one request, for the reply's details) each time an event of the VM arrives. When no
//! event comes (a controller from before the probe, or events that cannot be subscribed to),
//! it still asks every [`FALLBACK`], so an older controller is waited for too, just less
//! promptly.

use std::time::Duration;

use banger_bus::events::EventStream;
use banger_proto::agent::Health;
use banger_proto::event::EventKind;
use banger_proto::op::vm;
use banger_proto::vm::{VmInfo, VmRefRequest, VmState};
use banger_proto::{ApiError, ErrorCode, HostId, VmId};
use tokio::time::Instant;

use crate::App;
use crate::progress::Progress;

/// How long the wait goes without an event before it asks the controller anyway.
const FALLBACK: Duration = Duration::from_secs(2);
/// Deadline of one health request while waiting: the agent answers in milliseconds when it is
/// up, so a slow answer is as good as none.
const HEALTH_ATTEMPT: Duration = Duration::from_secs(5);

/// The `health` and `failed` events of the lab (or of one host), subscribed to before the
/// create is sent.
pub(crate) struct HealthEvents {
    health: Option<EventStream>,
    failed: Option<EventStream>,
}

impl HealthEvents {
    /// Subscribes (to `host`'s events when the create names one). A subscription that fails
    /// is logged and left out: the wait then relies on its fallback requests.
    pub(crate) async fn subscribe(app: &App, host: Option<&HostId>) -> Self {
        let subjects = app.bus.subjects();
        let sub = |kind| {
            let filter = subjects.events_filter(host, None, Some(kind));
            async move {
                match app.bus.subscribe_events(filter, None).await {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::debug!(error = %e, %kind, "subscribing to events; --wait asks periodically instead");
                        None
                    }
                }
            }
        };
        let health = sub(EventKind::Health).await;
        let failed = sub(EventKind::Failed).await;
        Self { health, failed }
    }

    /// Waits until an event of VM `id` arrives (`true`) or `limit` passes (`false`).
    async fn next_for(&mut self, id: &VmId, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        loop {
            let event = tokio::select! {
                () = tokio::time::sleep_until(until) => return false,
                e = next(&mut self.health) => e.map_err(|()| EventKind::Health),
                e = next(&mut self.failed) => e.map_err(|()| EventKind::Failed),
            };
            match event {
                Ok(ev) if &ev.event.vm.id == id => return true,
                Ok(_) => {}
                // The stream ended: forget it (its branch would be ready for ever).
                Err(EventKind::Health) => self.health = None,
                Err(_) => self.failed = None,
            }
        }
    }

    async fn close(self) {
        for s in [self.health, self.failed].into_iter().flatten() {
            s.unsubscribe().await;
        }
    }
}

/// The next event of `stream`; `Err` when it ended; never ready without a stream.
async fn next(stream: &mut Option<EventStream>) -> Result<banger_bus::events::ReceivedEvent, ()> {
    match stream {
        Some(s) => s.next().await.ok_or(()),
        None => std::future::pending().await,
    }
}

/// Waits until VM `vm`'s agent answers healthy or `timeout` passes (see the module's
/// documentation).
pub(crate) async fn wait_healthy(
    app: &App,
    vm: &VmInfo,
    timeout: Duration,
    mut events: HealthEvents,
) -> anyhow::Result<Health> {
    let result = wait(app, vm, timeout, &mut events).await;
    events.close().await;
    result
}

async fn wait(
    app: &App,
    vm: &VmInfo,
    timeout: Duration,
    events: &mut HealthEvents,
) -> anyhow::Result<Health> {
    let req = VmRefRequest { id: vm.id.clone() };
    let end = Instant::now() + timeout;
    let waiting = format!(
        "waiting up to {}s for {}'s guest agent",
        timeout.as_secs(),
        vm.name
    );
    let progress = if app.json {
        Progress::hidden()
    } else {
        Progress::announce(waiting.clone())
    };
    let mut last_error = String::from("no answer yet");
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ApiError::new(
                ErrorCode::Timeout,
                format!(
                    "{} did not become healthy within {}s (last: {last_error}); see `banger vm \
                     logs {}`",
                    vm.name,
                    timeout.as_secs(),
                    vm.name
                ),
            )
            .into());
        }
        match app
            .bus
            .call::<vm::Health>(&vm.host, &req, left.min(HEALTH_ATTEMPT))
            .await
        {
            Ok(h) => {
                if h.status == "ok" {
                    progress.finish_and_clear();
                    return Ok(h);
                }
                last_error = format!("agent status {:?}", h.status);
            }
            // The VM itself is gone or broken: waiting longer will not help.
            Err(banger_bus::RequestError::Remote(e))
                if matches!(e.code, ErrorCode::NotFound | ErrorCode::InvalidArgument) =>
            {
                return Err(e.into());
            }
            // Not running (yet, or any more): only keep waiting while it is on its way up.
            Err(banger_bus::RequestError::Remote(e)) if e.code == ErrorCode::Conflict => {
                if let Ok(now) = super::show::get(app, vm, left.min(HEALTH_ATTEMPT)).await
                    && !matches!(
                        now.state,
                        VmState::Creating | VmState::Starting | VmState::Running
                    )
                {
                    return Err(ApiError::new(
                        ErrorCode::Conflict,
                        format!(
                            "{} is {} and will not become healthy{}",
                            now.name,
                            now.state,
                            now.reason.map(|r| format!(": {r}")).unwrap_or_default()
                        ),
                    )
                    .into());
                }
                last_error = e.to_string();
            }
            Err(e) => last_error = e.to_string(),
        }
        progress.set_message(format!("{waiting} (last: {last_error})"));
        let left = end.saturating_duration_since(Instant::now());
        events.next_for(&vm.id, FALLBACK.min(left)).await;
    }
}
