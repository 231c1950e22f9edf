//! `banger vm show REF`: everything the controller knows about one VM.

use banger_proto::op::vm;
use banger_proto::vm::{VmInfo, VmRefRequest};

use super::inspect::RefArgs;
use super::units::{age, format_mib};
use crate::{App, exit, output};

/// Asks the VM's controller for its current record.
pub(crate) async fn get(
    app: &App,
    vm: &VmInfo,
    timeout: std::time::Duration,
) -> anyhow::Result<VmInfo> {
    Ok(app
        .bus
        .call::<vm::Get>(&vm.host, &VmRefRequest { id: vm.id.clone() }, timeout)
        .await?)
}

/// Runs `banger vm show`.
pub(crate) async fn run(app: &App, args: RefArgs) -> anyhow::Result<u8> {
    let found = super::resolve_single(app, &args.vm).await?;
    let vm = get(app, &found, app.timeout).await?;
    if app.json {
        output::print_json(&vm)?;
    } else {
        print!("{}", render(&vm, banger_bus::now_ms()));
    }
    Ok(exit::OK)
}

/// `key  value` lines.
pub(crate) fn render(vm: &VmInfo, now_ms: u64) -> String {
    let when = |ms: u64| format!("{} ago", age(ms, now_ms));
    let mut rows: Vec<(&str, String)> = vec![
        ("name", format!("{} ({}.vm)", vm.name, vm.name)),
        ("id", vm.id.to_string()),
        ("host", vm.host.to_string()),
        ("state", vm.state.to_string()),
        ("image", vm.image.to_string()),
        ("cpus", vm.cpus.to_string()),
        ("memory", format_mib(vm.memory_mib)),
        ("disk", format_mib(vm.disk_mib)),
    ];
    match &vm.network {
        Some(n) => {
            rows.push(("ip", n.ip.clone()));
            rows.push(("mac", n.mac.clone()));
            rows.push(("tap", n.tap.clone()));
        }
        None => rows.push(("ip", "- (no network while stopped)".into())),
    }
    for p in &vm.port_forwards {
        let proto = serde_json::to_value(p.protocol)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        rows.push((
            "forward",
            format!("host {} -> guest {}/{proto}", p.host_port, p.guest_port),
        ));
    }
    rows.push(("created", when(vm.created_at_ms)));
    if let Some(s) = vm.started_at_ms {
        rows.push(("started", when(s)));
    }
    if let Some(t) = vm.touched_at_ms {
        rows.push(("used", when(t)));
    }
    rows.push(("updated", when(vm.updated_at_ms)));
    if let Some(r) = &vm.reason {
        rows.push(("reason", r.clone()));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use banger_proto::net::{PortForward, Protocol};
    use banger_proto::vm::VmState;

    use super::*;
    use crate::commands::vm::resolve::tests::vm;

    #[test]
    fn show_renders_every_field() {
        let now = 86_400_000;
        let mut v = vm("web", "aaaa1111000000000000000000000000", "lab1");
        v.created_at_ms = now - 7_200_000;
        v.started_at_ms = Some(now - 600_000);
        v.updated_at_ms = now - 600_000;
        v.port_forwards = vec![PortForward {
            host_port: 8080,
            guest_port: 80,
            protocol: Protocol::Tcp,
        }];
        insta::assert_snapshot!(render(&v, now));
    }

    #[test]
    fn a_failed_vm_shows_why() {
        let mut v = vm("web", "aaaa1111000000000000000000000000", "lab1");
        v.state = VmState::Failed;
        v.network = None;
        v.reason = Some("starting firecracker: api socket did not appear".into());
        let out = render(&v, 0);
        assert!(out.contains("reason   starting firecracker"), "{out}");
    }
}
