//! `banger vm ...`.

use std::time::Duration;

use banger_proto::service;
use banger_proto::vm::{ListVmsReply, ListVmsRequest, VmInfo};

use crate::{App, exit, output};

/// How long discovery of the controllers waits for `$SRV.PING` answers.
const DISCOVERY_WINDOW: Duration = Duration::from_millis(300);

/// VM commands.
#[derive(Debug, clap::Subcommand)]
pub enum VmCommand {
    /// List the VMs of every host
    List,
}

/// Runs a VM command.
pub async fn run(app: &App, cmd: VmCommand) -> anyhow::Result<u8> {
    match cmd {
        VmCommand::List => list(app).await,
    }
}

async fn list(app: &App) -> anyhow::Result<u8> {
    let controllers = app
        .bus
        .ping(Some(service::VM_CONTROLLER), DISCOVERY_WINDOW)
        .await?;
    let replies = app
        .bus
        .gather::<_, ListVmsReply>(
            app.bus.subjects().vm_list(),
            &ListVmsRequest::default(),
            Some(controllers.len()),
            app.timeout,
        )
        .await?;
    let mut vms: Vec<VmInfo> = Vec::new();
    let mut answered = Vec::new();
    for r in replies {
        let r = r?;
        answered.push(r.host.to_string());
        vms.extend(r.vms);
    }
    let missing: Vec<String> = controllers
        .iter()
        .filter_map(|c| c.host())
        .filter(|h| !answered.iter().any(|a| a == h))
        .map(str::to_owned)
        .collect();
    vms.sort_by(|a, b| (&a.host, &a.name).cmp(&(&b.host, &b.name)));
    if app.json {
        output::print_json(&serde_json::json!({ "vms": vms, "unreachable_hosts": missing }))?;
    } else {
        let rows: Vec<Vec<String>> = vms
            .iter()
            .map(|v| {
                vec![
                    v.name.to_string(),
                    v.host.to_string(),
                    v.state.to_string(),
                    v.network.as_ref().map_or("-".into(), |n| n.ip.clone()),
                    v.id.short().to_owned(),
                ]
            })
            .collect();
        print!(
            "{}",
            output::table(&["NAME", "HOST", "STATE", "IP", "ID"], &rows)
        );
        for h in &missing {
            eprintln!("warning: host {h} did not answer");
        }
    }
    if controllers.is_empty() {
        eprintln!("no vm-controller answered: is the stack running (`banger up`)?");
        return Ok(exit::NOT_FOUND_OR_UNAVAILABLE);
    }
    Ok(if missing.is_empty() {
        exit::OK
    } else {
        exit::PARTIAL
    })
}
