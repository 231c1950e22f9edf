//! `vm.create`: validate, persist a `creating` record, boot (unless asked not to).
//!
//! Everything that can be checked is checked before the record is written: the request's
//! values (typed: a zero or negative cpu count or memory size never deserialises), the port
//! forwards, the host the request names, the image (stord must know it) and the name (unique on
//! this host by the database, in the lab by one `vm.list` gather).

use banger_proto::event::EventKind;
use banger_proto::store::VolumeCreateRequest;
use banger_proto::vm::{CreateVmRequest, VmOpReply, VmState};
use banger_proto::{ApiError, ErrorCode};

use crate::boot::{BootKind, step};
use crate::controller::Controller;
use crate::ids::new_vm_id;
use crate::store::NewVm;

impl Controller {
    /// Creates a VM on this host.
    pub async fn create(&self, req: CreateVmRequest) -> Result<VmOpReply, ApiError> {
        let inner = &self.inner;
        if let Some(host) = &req.host
            && host != &inner.host
        {
            return Err(ApiError::invalid(format!(
                "the request asks for host {host} but reached host {}",
                inner.host
            )));
        }
        for pf in &req.port_forwards {
            pf.validate().map_err(ApiError::invalid)?;
        }
        let image_name = req
            .image
            .clone()
            .unwrap_or_else(|| inner.config.default_image.clone());
        let image = inner.stord.image_show(&image_name).await.map_err(|e| {
            if e.code == ErrorCode::NotFound {
                // Images are per host: the registration must name this one.
                let hint = if req.image.is_none() {
                    format!(
                        " (the default image); register one with `banger image register ... \
                         --host {}` or pass --image",
                        inner.host
                    )
                } else {
                    format!(
                        "; register it with `banger image register {image_name} ... --host {}`",
                        inner.host
                    )
                };
                ApiError::not_found(format!(
                    "image {image_name} is not registered on host {}{hint}",
                    inner.host
                ))
            } else {
                step("looking up the image", e.into())
            }
        })?;
        if inner.config.lab_name_check
            && let Some((host, _)) = inner.lab.find_name(&req.name).await
        {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("a vm named {} already exists on host {host}", req.name),
            ));
        }
        let id = new_vm_id();
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
        let rec = inner
            .events
            .commit(EventKind::Created, inner.db.insert_numbered(new))
            .await
            .map_err(|e| self.store_error(e))?;
        tracing::info!(vm.id = %id, vm.name = %rec.info.name, image = %image.name, "vm created");
        if req.start {
            let rec = self.boot(&id, BootKind::Create).await?;
            return Ok(VmOpReply {
                vm: rec.info,
                note: None,
            });
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
                Ok(VmOpReply {
                    vm: rec.info,
                    note: Some("created without starting it".to_owned()),
                })
            }
            Err(e) => {
                let e = step("creating the volumes", e.into());
                self.transition_and_emit(
                    &id,
                    VmState::Failed,
                    Some(e.message.clone()),
                    EventKind::Failed,
                )
                .await?;
                Err(e)
            }
        }
    }
}
