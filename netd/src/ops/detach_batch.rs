//! Concurrent `net.detach` requests torn down together (group commit).
//!
//! When 100 VMs stop at once, the controller sends 100 `net.detach` requests at once. Torn down
//! one by one, each is its own kernel delete (a device unregistration waits for an RCU grace
//! period under the rtnl lock) and its own lease transaction, one after the other. Here a
//! request joins a queue and waits for its turn; the request whose turn comes tears down
//! everything queued by then in one [`teardown`] (one group delete of all their taps, one lease
//! transaction) and hands each waiter its own result. Requests that arrive while a batch runs
//! form the next batch. Nothing waits for a timer: a lone request is torn down at once.
//!
//! A batch that fails as a whole (a kernel or store error) is retried one VM at a time, so one
//! VM's failure is reported for that VM only and the others are still detached.

use std::collections::HashMap;
use std::sync::Mutex;

use banger_proto::net::{DetachReply, DetachRequest};
use banger_proto::{ApiError, VmId};
use tokio::sync::oneshot;

use super::detach::{DetachError, Teardown, TornDown, teardown};
use crate::state::Netd;

/// What a waiter gets: its VM's teardown, or why it failed.
type Outcome = Result<TornDown, ApiError>;

/// One queued request.
struct Waiter {
    item: Teardown,
    reply: oneshot::Sender<Outcome>,
}

/// The queue of `net.detach` requests and the turn that drains it.
#[derive(Default)]
pub struct DetachQueue {
    waiting: Mutex<Vec<Waiter>>,
    turn: tokio::sync::Mutex<()>,
}

impl DetachQueue {
    fn push(&self, w: Waiter) {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(w);
    }

    fn take(&self) -> Vec<Waiter> {
        std::mem::take(
            &mut *self
                .waiting
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// How many requests are waiting (tests).
    pub fn len(&self) -> usize {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether no request is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Detaches one VM, torn down together with the requests queued at the same time. An unknown
/// VM is `not_found` and changes nothing, as with [`super::detach::detach`].
pub async fn detach_batched(netd: &Netd, req: DetachRequest) -> Result<DetachReply, ApiError> {
    let item = Teardown {
        vm: req.vm_id.clone(),
        release: req.release,
        stopped_at_ms: None,
        catch_up: false,
    };
    let (reply, mut rx) = oneshot::channel();
    netd.detaches.push(Waiter {
        item: item.clone(),
        reply,
    });
    let done = {
        let _turn = netd.detaches.turn.lock().await;
        match rx.try_recv() {
            // An earlier turn took this request into its batch.
            Ok(outcome) => outcome,
            // Still queued (a batch sends every result before its turn ends): this turn
            // drains the queue, this request with it.
            Err(oneshot::error::TryRecvError::Empty) => {
                run_batch(netd, netd.detaches.take()).await;
                rx.await.unwrap_or_else(|_| Err(lost(&req.vm_id)))
            }
            // The turn that took it was cancelled before it answered: do it alone.
            Err(oneshot::error::TryRecvError::Closed) => alone(netd, item).await,
        }
    };
    match done? {
        d if d.had_lease => Ok(DetachReply {
            tap_removed: d.tap_removed,
            released: d.released,
        }),
        _ => Err(DetachError::NotFound(req.vm_id).into()),
    }
}

/// Tears down every queued request in one go and answers each; when the batch fails as a
/// whole, each VM is retried alone, so a failure is reported for its own VM only.
async fn run_batch(netd: &Netd, waiters: Vec<Waiter>) {
    if waiters.is_empty() {
        return;
    }
    let items: Vec<Teardown> = waiters.iter().map(|w| w.item.clone()).collect();
    if waiters.len() > 1 {
        tracing::debug!(vms = waiters.len(), "detaching a batch");
    }
    match teardown(netd, &items).await {
        Ok(done) => {
            let by_vm: HashMap<VmId, TornDown> =
                done.into_iter().map(|d| (d.vm.clone(), d)).collect();
            for w in waiters {
                let outcome = by_vm
                    .get(&w.item.vm)
                    .cloned()
                    .ok_or_else(|| lost(&w.item.vm));
                let _ = w.reply.send(outcome);
            }
        }
        Err(e) if waiters.len() == 1 => {
            if let Some(w) = waiters.into_iter().next() {
                let _ = w.reply.send(Err(e.into()));
            }
        }
        Err(e) => {
            tracing::warn!(
                vms = waiters.len(),
                error = %banger_bus::runtime::chain(&e),
                "detaching a batch failed: one VM at a time"
            );
            for w in waiters {
                let outcome = alone(netd, w.item).await;
                let _ = w.reply.send(outcome);
            }
        }
    }
}

/// Tears down one VM by itself.
async fn alone(netd: &Netd, item: Teardown) -> Outcome {
    let vm = item.vm.clone();
    teardown(netd, &[item])
        .await
        .map_err(ApiError::from)?
        .into_iter()
        .next()
        .ok_or_else(|| lost(&vm))
}

/// A teardown that returned no line for a VM it was given (not expected).
fn lost(vm: &VmId) -> ApiError {
    ApiError::new(
        banger_proto::ErrorCode::Internal,
        format!("the teardown of VM {vm} gave no result"),
    )
}
