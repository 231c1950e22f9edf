//! `net.attach`: give a VM its lease, its tap on the bridge and its port-forward rules.
//!
//! Idempotent: attaching an attached VM returns the same lease (and re-asserts the tap's bridge,
//! MTU and link state). Steps: validate the forwards, reserve the lease in one transaction
//! (address, MAC, tap name, forwards; a taken host port or a full subnet fails here with nothing
//! written), create the persistent tap if missing and put it on the bridge, install the DNAT
//! rules. A failure after the reservation removes a tap it created and restores the previous
//! lease and rules, so nothing is left half-built.

use std::collections::HashSet;
use std::sync::Arc;

use banger_bus::runtime::chain;
use banger_proto::net::{AttachRequest, Lease, PortForward};
use banger_proto::{ApiError, ErrorCode};
use tracing::Instrument;

use crate::link::LinkError;
use crate::nat::{NatError, VmRules};
use crate::state::{Netd, RestoreError};
use crate::store::{Reservation, ReserveError, StoreError};
use crate::tap::TapError;

/// Why an attach failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// A port forward is malformed.
    #[error("invalid port forward {forward}: {why}")]
    Forward {
        /// The forward as given.
        forward: String,
        /// Why.
        why: String,
    },
    /// The lease could not be reserved.
    #[error("reserving the lease")]
    Reserve(#[from] ReserveError),
    /// The bridge is missing and could not be recreated.
    #[error("ensuring the bridge")]
    Bridge(#[source] LinkError),
    /// The tap could not be created.
    #[error("creating tap {tap}")]
    Tap {
        /// The tap.
        tap: String,
        /// The cause.
        #[source]
        source: TapError,
    },
    /// Netlink failed while setting the tap up.
    #[error("putting tap {tap} on the bridge")]
    Link {
        /// The tap.
        tap: String,
        /// The cause.
        #[source]
        source: LinkError,
    },
    /// The port-forward rules could not be installed.
    #[error("installing port-forward rules")]
    Nat(#[source] NatError),
    /// Reinstalling the table failed.
    #[error("reinstalling the nftables table")]
    Restore(#[source] RestoreError),
}

impl From<AttachError> for ApiError {
    fn from(e: AttachError) -> Self {
        let code = match &e {
            AttachError::Forward { .. } => ErrorCode::InvalidArgument,
            AttachError::Reserve(ReserveError::PortTaken { .. }) => ErrorCode::Conflict,
            AttachError::Reserve(ReserveError::Exhausted { .. }) => ErrorCode::Exhausted,
            _ => ErrorCode::Internal,
        };
        ApiError::new(code, chain(&e))
    }
}

/// The endpoint.
pub async fn handle(netd: Arc<Netd>, req: AttachRequest) -> Result<Lease, ApiError> {
    let span = tracing::info_span!(
        "net.attach",
        vm.id = %req.vm_id,
        vm.name = %req.vm_name,
        host = %netd.host,
    );
    attach(&netd, req)
        .instrument(span)
        .await
        .map_err(Into::into)
}

/// Checks each forward and that no host port is given twice.
pub fn validate(forwards: &[PortForward]) -> Result<(), AttachError> {
    let mut seen = HashSet::new();
    for pf in forwards {
        let text = || {
            format!(
                "{}:{}/{}",
                pf.host_port,
                pf.guest_port,
                match pf.protocol {
                    banger_proto::net::Protocol::Tcp => "tcp",
                    banger_proto::net::Protocol::Udp => "udp",
                }
            )
        };
        pf.validate().map_err(|why| AttachError::Forward {
            forward: text(),
            why,
        })?;
        if !seen.insert((pf.protocol, pf.host_port)) {
            return Err(AttachError::Forward {
                forward: text(),
                why: "the host port is given twice".into(),
            });
        }
    }
    Ok(())
}

/// Attaches a VM (see the module docs).
pub async fn attach(netd: &Netd, req: AttachRequest) -> Result<Lease, AttachError> {
    validate(&req.port_forwards)?;
    let _gate = netd.gate.read().await;
    let _vm = netd.locks.lock(&req.vm_id).await;
    let r = netd
        .store
        .reserve(
            req.vm_id.clone(),
            req.vm_name.clone(),
            req.port_forwards.clone(),
            netd.cfg.subnet,
            netd.cfg.gateway,
        )
        .await?;
    let mut created_tap = None;
    match apply(netd, &r, &mut created_tap).await {
        Ok(()) => {
            tracing::info!(
                tap = %r.lease.tap,
                ip = %r.lease.ip,
                forwards = r.lease.port_forwards.len(),
                new = r.previous.is_none(),
                "attached"
            );
            Ok(netd.to_wire(&r.lease, true))
        }
        Err(e) => {
            undo(netd, r, created_tap).await;
            Err(e)
        }
    }
}

async fn apply(
    netd: &Netd,
    r: &Reservation,
    created_tap: &mut Option<u32>,
) -> Result<(), AttachError> {
    let bridge = match netd.kernel.link_by_name(&netd.cfg.bridge).await {
        Ok(Some(b)) => b.index,
        Ok(None) | Err(_) => netd.ensure_bridge().await.map_err(AttachError::Bridge)?,
    };
    let tap_name = r.lease.tap.clone();
    let link_err = |source| AttachError::Link {
        tap: tap_name.clone(),
        source,
    };
    let tap = match netd
        .kernel
        .link_by_name(&tap_name)
        .await
        .map_err(link_err)?
    {
        Some(t) => t,
        None => {
            netd.kernel
                .create_tap(&tap_name)
                .await
                .map_err(|source| AttachError::Tap {
                    tap: tap_name.clone(),
                    source,
                })?;
            let t = netd
                .kernel
                .link_by_name(&tap_name)
                .await
                .map_err(link_err)?
                .ok_or_else(|| link_err(LinkError::Vanished(tap_name.clone())))?;
            *created_tap = Some(t.index);
            t
        }
    };
    netd.kernel
        .join_bridge(tap.index, bridge, netd.cfg.mtu)
        .await
        .map_err(link_err)?;

    let had_forwards = r
        .previous
        .as_ref()
        .is_some_and(|p| !p.port_forwards.is_empty());
    if had_forwards || !r.lease.port_forwards.is_empty() {
        let rules = VmRules {
            vm: r.lease.vm_id.clone(),
            ip: r.lease.ip,
            forwards: r.lease.port_forwards.clone(),
        };
        match netd.kernel.replace_vm_rules(&rules).await {
            Ok(()) => {}
            Err(NatError::Incomplete(table)) => {
                tracing::warn!(%table, "table incomplete: reinstalling it");
                netd.restore_rules().await.map_err(AttachError::Restore)?;
            }
            Err(e) => return Err(AttachError::Nat(e)),
        }
    }
    Ok(())
}

/// Puts everything back as it was before the reservation.
async fn undo(netd: &Netd, r: Reservation, created_tap: Option<u32>) {
    if let Some(index) = created_tap
        && let Err(e) = netd.kernel.delete_link(index).await
    {
        tracing::warn!(error = %chain(&e), "undo: removing the tap failed");
    }
    let touched_rules = !r.lease.port_forwards.is_empty()
        || r.previous
            .as_ref()
            .is_some_and(|p| !p.port_forwards.is_empty());
    if let Err(e) = netd.store.undo(r).await {
        tracing::warn!(error = %chain(&e), "undo: restoring the lease failed");
    }
    if touched_rules && let Err(e) = netd.restore_rules().await {
        tracing::warn!(error = %chain(&e), "undo: restoring the rules failed");
    }
}

impl From<StoreError> for AttachError {
    fn from(e: StoreError) -> Self {
        Self::Reserve(ReserveError::Store(e))
    }
}

#[cfg(test)]
mod tests {
    use banger_proto::net::Protocol;

    use super::*;

    fn pf(h: u16, g: u16) -> PortForward {
        PortForward {
            host_port: h,
            guest_port: g,
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn forwards_with_port_zero_or_a_repeated_host_port_are_invalid() {
        assert!(validate(&[pf(8080, 80), pf(8081, 80)]).is_ok());
        let e = validate(&[pf(0, 80)]).unwrap_err();
        assert_eq!(ApiError::from(e).code, ErrorCode::InvalidArgument);
        let e = validate(&[pf(8080, 80), pf(8080, 81)]).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        let udp = PortForward {
            protocol: Protocol::Udp,
            ..pf(8080, 80)
        };
        assert!(validate(&[pf(8080, 80), udp]).is_ok());
    }
}
