//! `banger vm stats REF` and `banger vm health REF`: one question to the VM's controller.

use std::time::Duration;

use banger_proto::agent::Health;
use banger_proto::op::vm;
use banger_proto::vm::{VmRefRequest, VmStats};

use super::units::format_bytes;
use crate::{App, exit, output};

/// Flags of commands that take one VM.
#[derive(Debug, clap::Args)]
pub struct RefArgs {
    /// The VM: name, id or unique id prefix
    #[arg(value_name = "REF")]
    pub vm: String,
}

/// Runs `banger vm health`: exit 0 when the agent reports `ok`.
pub(crate) async fn health(app: &App, args: RefArgs) -> anyhow::Result<u8> {
    let vm = super::resolve_single(app, &args.vm).await?;
    let h = app
        .bus
        .call::<vm::Health>(&vm.host, &VmRefRequest { id: vm.id.clone() }, app.timeout)
        .await?;
    if app.json {
        output::print_json(&h)?;
    } else {
        println!("{}", render_health(vm.name.as_str(), &h));
    }
    Ok(if h.status == "ok" {
        exit::OK
    } else {
        exit::FAILURE
    })
}

/// Runs `banger vm stats`.
pub(crate) async fn stats(app: &App, args: RefArgs) -> anyhow::Result<u8> {
    let vm = super::resolve_single(app, &args.vm).await?;
    let s = app
        .bus
        .call::<vm::Stats>(&vm.host, &VmRefRequest { id: vm.id.clone() }, app.timeout)
        .await?;
    if app.json {
        output::print_json(&s)?;
    } else {
        print!("{}", render_stats(vm.name.as_str(), &s));
    }
    Ok(exit::OK)
}

fn uptime(secs: f64) -> String {
    let s = Duration::try_from_secs_f64(secs).map_or(0, |d| d.as_secs());
    let (d, h, m) = (s / 86_400, (s / 3600) % 24, (s / 60) % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{}s", s % 60)
    } else {
        format!("{s}s")
    }
}

/// One line: the agent's status, version, hostname and uptime.
pub(crate) fn render_health(name: &str, h: &Health) -> String {
    format!(
        "{name}: {} (agent {}, hostname {}, up {})",
        if h.status == "ok" {
            "healthy".to_owned()
        } else {
            format!("agent reports {:?}", h.status)
        },
        h.agent_version,
        h.hostname,
        uptime(h.uptime_secs)
    )
}

/// The hypervisor's footprint and, when the agent answered, the guest's view.
pub(crate) fn render_stats(name: &str, s: &VmStats) -> String {
    let mut out = format!("{name}\n");
    out.push_str(&format!(
        "  hypervisor  memory {}, cpu time {}\n",
        s.vmm_rss_bytes.map_or("-".into(), format_bytes),
        s.vmm_cpu_ms
            .map_or("-".into(), |ms| format!("{}.{:03}s", ms / 1000, ms % 1000)),
    ));
    match &s.guest {
        Some(g) => out.push_str(&format!(
            "  guest       up {}, load {:.2} {:.2} {:.2}, memory {} available of {}, root fs {} \
             free of {}\n",
            uptime(g.uptime_secs),
            g.load[0],
            g.load[1],
            g.load[2],
            format_bytes(g.mem_available_bytes),
            format_bytes(g.mem_total_bytes),
            format_bytes(g.rootfs_free_bytes),
            format_bytes(g.rootfs_total_bytes),
        )),
        None => out.push_str("  guest       the agent did not answer\n"),
    }
    if let Some(m) = &s.vmm_metrics {
        let net = &m["net"];
        let count =
            |v: &serde_json::Value, k: &str| v[k].as_u64().map_or("-".into(), |n| n.to_string());
        out.push_str(&format!(
            "  metrics     api requests {}, net frames rx {} tx {} (all fields: --json)\n",
            count(&m["api_server"], "requests"),
            count(net, "rx_frames"),
            count(net, "tx_frames"),
        ));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use banger_proto::VmId;

    use super::*;

    pub(crate) fn health() -> Health {
        Health {
            status: "ok".into(),
            uptime_secs: 725.4,
            hostname: "web".into(),
            agent_version: "0.1.0".into(),
            boot_id: "b".into(),
            load: [0.1, 0.05, 0.0],
            mem_total_bytes: 512 * 1024 * 1024,
            mem_available_bytes: 380 * 1024 * 1024,
            rootfs_total_bytes: 2 * 1024 * 1024 * 1024,
            rootfs_free_bytes: 1200 * 1024 * 1024,
        }
    }

    #[test]
    fn stats_render_for_people() {
        let s = VmStats {
            id: VmId::new("aaaa1111000000000000000000000000").unwrap(),
            vmm_rss_bytes: Some(34 * 1024 * 1024),
            vmm_cpu_ms: Some(1250),
            guest: Some(health()),
            vmm_metrics: None,
        };
        insta::assert_snapshot!(render_stats("web", &s));
        let bare = VmStats {
            guest: None,
            vmm_rss_bytes: None,
            vmm_cpu_ms: None,
            ..s
        };
        assert!(render_stats("web", &bare).contains("did not answer"));
    }

    #[test]
    fn health_renders_in_one_line() {
        assert_eq!(
            render_health("web", &health()),
            "web: healthy (agent 0.1.0, hostname web, up 12m5s)"
        );
    }
}
