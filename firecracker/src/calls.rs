//! Every request the client makes, built as data before it is sent.
//!
//! [`FirecrackerClient`](crate::client::FirecrackerClient) turns each method into an
//! [`ApiCall`] here and sends it. Keeping the request a plain value lets the contract test
//! check the *exact* method, path and body the client would send against the API definition,
//! without a server.

use serde::Serialize;
use serde_json::Value;

use crate::models::{
    BootSource, Drive, InstanceActionInfo, Logger, MachineConfiguration, Metrics, NetworkInterface,
    SnapshotCreateParams, SnapshotLoadParams, Vm, VmState, Vsock,
};

/// One HTTP request to the Firecracker API.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiCall {
    /// The call's name as errors report it (`put_drive`).
    pub name: &'static str,
    /// `GET`, `PUT` or `PATCH`.
    pub method: &'static str,
    /// The concrete path, e.g. `/drives/rootfs`.
    pub path: String,
    /// The definition the body must match, as named in the API definition.
    pub definition: Option<&'static str>,
    /// The JSON body.
    pub body: Option<Value>,
}

/// A body could not be turned into JSON (a path that is not UTF-8).
#[derive(Debug, thiserror::Error)]
#[error("encoding the {call} body")]
pub struct EncodeError {
    /// The call.
    pub call: &'static str,
    /// Why.
    #[source]
    pub source: serde_json::Error,
}

fn with_body<T: Serialize>(
    name: &'static str,
    method: &'static str,
    path: String,
    definition: &'static str,
    body: &T,
) -> Result<ApiCall, EncodeError> {
    let body = serde_json::to_value(body).map_err(|source| EncodeError { call: name, source })?;
    Ok(ApiCall {
        name,
        method,
        path,
        definition: Some(definition),
        body: Some(body),
    })
}

fn get(name: &'static str, path: &str) -> ApiCall {
    ApiCall {
        name,
        method: "GET",
        path: path.to_owned(),
        definition: None,
        body: None,
    }
}

/// `PUT /machine-config`.
pub fn put_machine_config(body: &MachineConfiguration) -> Result<ApiCall, EncodeError> {
    with_body(
        "put_machine_config",
        "PUT",
        "/machine-config".into(),
        "MachineConfiguration",
        body,
    )
}

/// `PUT /boot-source`.
pub fn put_boot_source(body: &BootSource) -> Result<ApiCall, EncodeError> {
    with_body(
        "put_boot_source",
        "PUT",
        "/boot-source".into(),
        "BootSource",
        body,
    )
}

/// `PUT /drives/{drive_id}` (the id comes from the body).
pub fn put_drive(body: &Drive) -> Result<ApiCall, EncodeError> {
    with_body(
        "put_drive",
        "PUT",
        format!("/drives/{}", body.drive_id),
        "Drive",
        body,
    )
}

/// `PUT /network-interfaces/{iface_id}` (the id comes from the body).
pub fn put_network_interface(body: &NetworkInterface) -> Result<ApiCall, EncodeError> {
    with_body(
        "put_network_interface",
        "PUT",
        format!("/network-interfaces/{}", body.iface_id),
        "NetworkInterface",
        body,
    )
}

/// `PUT /vsock`.
pub fn put_vsock(body: &Vsock) -> Result<ApiCall, EncodeError> {
    with_body("put_vsock", "PUT", "/vsock".into(), "Vsock", body)
}

/// `PUT /logger`.
pub fn put_logger(body: &Logger) -> Result<ApiCall, EncodeError> {
    with_body("put_logger", "PUT", "/logger".into(), "Logger", body)
}

/// `PUT /metrics`.
pub fn put_metrics(body: &Metrics) -> Result<ApiCall, EncodeError> {
    with_body("put_metrics", "PUT", "/metrics".into(), "Metrics", body)
}

/// `PUT /actions`, named after the action (`instance_start`, ...).
pub fn action(name: &'static str, body: InstanceActionInfo) -> Result<ApiCall, EncodeError> {
    with_body(name, "PUT", "/actions".into(), "InstanceActionInfo", &body)
}

/// `PUT /actions` `InstanceStart`.
pub fn instance_start() -> Result<ApiCall, EncodeError> {
    action("instance_start", InstanceActionInfo::INSTANCE_START)
}

/// `PUT /actions` `SendCtrlAltDel`.
pub fn send_ctrl_alt_del() -> Result<ApiCall, EncodeError> {
    action("send_ctrl_alt_del", InstanceActionInfo::SEND_CTRL_ALT_DEL)
}

/// `PUT /actions` `FlushMetrics`.
pub fn flush_metrics() -> Result<ApiCall, EncodeError> {
    action("flush_metrics", InstanceActionInfo::FLUSH_METRICS)
}

/// `PATCH /vm` `Paused`.
pub fn pause() -> Result<ApiCall, EncodeError> {
    with_body(
        "pause",
        "PATCH",
        "/vm".into(),
        "Vm",
        &Vm {
            state: VmState::Paused,
        },
    )
}

/// `PATCH /vm` `Resumed`.
pub fn resume() -> Result<ApiCall, EncodeError> {
    with_body(
        "resume",
        "PATCH",
        "/vm".into(),
        "Vm",
        &Vm {
            state: VmState::Resumed,
        },
    )
}

/// `PUT /snapshot/create`.
pub fn create_snapshot(body: &SnapshotCreateParams) -> Result<ApiCall, EncodeError> {
    with_body(
        "create_snapshot",
        "PUT",
        "/snapshot/create".into(),
        "SnapshotCreateParams",
        body,
    )
}

/// `PUT /snapshot/load`.
pub fn load_snapshot(body: &SnapshotLoadParams) -> Result<ApiCall, EncodeError> {
    with_body(
        "load_snapshot",
        "PUT",
        "/snapshot/load".into(),
        "SnapshotLoadParams",
        body,
    )
}

/// `GET /`.
pub fn describe_instance() -> ApiCall {
    get("describe_instance", "/")
}

/// `GET /version`.
pub fn version() -> ApiCall {
    get("version", "/version")
}

/// `GET /machine-config`.
pub fn get_machine_config() -> ApiCall {
    get("get_machine_config", "/machine-config")
}
