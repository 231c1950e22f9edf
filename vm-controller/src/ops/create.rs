//! `vm.create`: validate, persist a `creating` record, boot (unless asked not to).
//!
//! Everything that can be checked is checked before the record is written: the request's
//! values (typed: a zero or negative cpu count or memory size never deserialises), the port
//! forwards, the host the request names, the image (stord must know it) and the name (unique on
//! this host by the database, in the lab by the name directory: its key is claimed before the
//! record is written and given back if the record is not; see [`crate::names`]).

use banger_proto::event::EventKind;
use banger_proto::store::VolumeCreateRequest;
use banger_proto::vm::{CreateVmRequest, VmOpReply, VmState};
use banger_proto::{ErrorCode, HostId, ImageName, VmName};

use crate::boot::BootKind;
use crate::controller::Controller;
use crate::deps::{Claim, DepError};
use crate::error::{BootError, Coded, RecordError};
use crate::ids::new_vm_id;
use crate::store::NewVm;

/// Why a create failed.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The request names another host.
    #[error("the request asks for host {asked} but reached host {reached}")]
    WrongHost {
        /// The host asked for.
        asked: HostId,
        /// This host.
        reached: HostId,
    },
    /// A port forward is malformed.
    #[error("{0}")]
    Forward(String),
    /// stord does not know the image on this host.
    #[error(
        "image {image} is not registered on host {host}{}",
        register_hint(image, host, *default)
    )]
    NoImage {
        /// The image.
        image: ImageName,
        /// This host.
        host: HostId,
        /// Whether it is the configured default (the request named none).
        default: bool,
    },
    /// stord could not be asked for the image.
    #[error("looking up the image")]
    Image(#[source] DepError),
    /// Another host of the lab has a VM of that name.
    #[error("a vm named {name} already exists on host {host}")]
    NameTaken {
        /// The name.
        name: VmName,
        /// The host that has it.
        host: HostId,
    },
    /// The record could not be written.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The boot (or, for a VM created stopped, its volumes) failed.
    #[error(transparent)]
    Boot(#[from] BootError),
}

/// What to do about an image this host does not have: images are per host, so the
/// registration must name this one.
fn register_hint(image: &ImageName, host: &HostId, default: bool) -> String {
    if default {
        format!(
            " (the default image); register one with `banger image register ... --host {host}` \
             or pass --image"
        )
    } else {
        format!("; register it with `banger image register {image} ... --host {host}`")
    }
}

impl Coded for CreateError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::WrongHost { .. } | Self::Forward(_) => ErrorCode::InvalidArgument,
            Self::NoImage { .. } => ErrorCode::NotFound,
            Self::Image(e) => e.code(),
            Self::NameTaken { .. } => ErrorCode::Conflict,
            Self::Record(e) => e.code(),
            Self::Boot(e) => e.code(),
        }
    }
}

impl Controller {
    /// Creates a VM on this host.
    pub async fn create(&self, req: CreateVmRequest) -> Result<VmOpReply, CreateError> {
        let inner = &self.inner;
        if let Some(host) = &req.host
            && host != &inner.host
        {
            return Err(CreateError::WrongHost {
                asked: host.clone(),
                reached: inner.host.clone(),
            });
        }
        for pf in &req.port_forwards {
            pf.validate().map_err(CreateError::Forward)?;
        }
        let image_name = req
            .image
            .clone()
            .unwrap_or_else(|| inner.config.default_image.clone());
        let image = inner.stord.image_show(&image_name).await.map_err(|e| {
            if e.code() == ErrorCode::NotFound {
                CreateError::NoImage {
                    image: image_name.clone(),
                    host: inner.host.clone(),
                    default: req.image.is_none(),
                }
            } else {
                CreateError::Image(e)
            }
        })?;
        let id = new_vm_id();
        let claim = if inner.config.lab_name_check {
            match inner.lab.claim_name(&req.name, &id).await {
                Claim::Taken { host, .. } => {
                    return Err(CreateError::NameTaken {
                        name: req.name.clone(),
                        host,
                    });
                }
                claim => Some(claim),
            }
        } else {
            None
        };
        // The id is lockable the moment it exists: take the lock before the record is visible.
        let _guard = self.lock(&id).await;
        let new = NewVm {
            id: id.clone(),
            name: req.name.clone(),
            image: image.name.clone(),
            cpus: req.cpus.unwrap_or(inner.config.default_cpus),
            memory_mib: req.memory_mib.unwrap_or(inner.config.default_memory_mib),
            disk_mib: req.disk_mib.unwrap_or(image.default_disk_mib),
            port_forwards: req.port_forwards.clone(),
            now_ms: banger_bus::now_ms(),
        };
        // The record and its `created` event's number: one write transaction.
        let recorded = inner
            .events
            .commit(EventKind::Created, |h| {
                inner
                    .db
                    .insert_numbered(new, move |rec, seq| h.post(&rec.info, seq))
            })
            .await;
        let rec = match (recorded, claim) {
            (Ok(rec), Some(Claim::Here)) => {
                inner.lab.adopt_name(&req.name, &id).await;
                rec
            }
            (Ok(rec), _) => rec,
            (Err(e), claim) => {
                if claim == Some(Claim::Claimed) {
                    inner.lab.release_name(&req.name, &id).await;
                }
                return Err(self.store_error(e).into());
            }
        };
        tracing::info!(vm.id = %id, vm.name = %rec.info.name, image = %image.name, "vm created");
        if req.start {
            let rec = self.boot(&id, BootKind::Create).await?;
            return Ok(VmOpReply::new(rec.info, None));
        }
        // Not started: make the volumes now, so a bad image fails the create, not a later start.
        let made = inner
            .stord
            .volume_create(VolumeCreateRequest {
                vm_id: id.clone(),
                image: rec.info.image.clone(),
                disk_mib: Some(rec.info.disk_mib),
            })
            .await;
        match made {
            Ok(_) => {
                let rec = self
                    .transition_and_emit(&id, VmState::Stopped, None, EventKind::Stopped)
                    .await?;
                Ok(VmOpReply::new(
                    rec.info,
                    Some("created without starting it".to_owned()),
                ))
            }
            Err(e) => {
                let e = BootError::Volumes(e);
                self.transition_and_emit(
                    &id,
                    VmState::Failed,
                    Some(banger_bus::runtime::chain(&e)),
                    EventKind::Failed,
                )
                .await?;
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
impl crate::error::Samples for CreateError {
    fn samples() -> Vec<Self> {
        use crate::error::samples::{dep_errors, host, name};
        use crate::error::{BootError, RecordError};
        let image = || ImageName::new("debian").unwrap();
        let mut all = vec![
            Self::WrongHost {
                asked: HostId::new("h2").unwrap(),
                reached: host(),
            },
            Self::Forward("port forward ports must be between 1 and 65535".into()),
            Self::NoImage {
                image: image(),
                host: host(),
                default: true,
            },
            Self::NoImage {
                image: image(),
                host: host(),
                default: false,
            },
            Self::NameTaken {
                name: name(),
                host: host(),
            },
        ];
        all.extend(
            dep_errors::<banger_proto::op::store::ImageShow>()
                .into_iter()
                // A `not_found` answer becomes `NoImage`.
                .filter(|e| e.code() != ErrorCode::NotFound)
                .map(Self::Image),
        );
        all.extend(RecordError::samples().into_iter().map(Self::Record));
        all.extend(BootError::samples().into_iter().map(Self::Boot));
        all
    }
}
