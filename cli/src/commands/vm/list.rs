//! `banger vm list`: every VM of every host, in a table or as JSON.

use banger_proto::vm::VmInfo;

use super::snapshot::{self, Snapshot};
use super::units::{age, format_mib};
use crate::{App, exit, output};

/// Flags of `banger vm list`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 when every host answered, 3 when the list may be \
                        incomplete: some hosts did not answer (their VMs are missing; the hosts \
                        are named on stderr and in --json's unreachable_hosts), or the lab's \
                        membership could not be read (\"lab membership unknown\" on stderr, \
                        \"membership\": \"unknown\" in --json: a cut-off host cannot be \
                        named), 4 when no vm-controller runs."
)]
pub struct ListArgs {}

/// Runs `banger vm list`.
pub(crate) async fn run(app: &App, _args: ListArgs) -> anyhow::Result<u8> {
    let snap = snapshot::fetch(app, &[]).await?;
    if app.json {
        output::print_json(&serde_json::json!({
            "vms": snap.vms,
            "unreachable_hosts": snap.unreachable,
            "membership": if snap.membership_unknown { "unknown" } else { "known" },
        }))?;
    } else {
        print!("{}", render(&snap.vms, banger_bus::now_ms()));
    }
    snapshot::warn_incomplete(&snap);
    Ok(code(&snap))
}

fn code(snap: &Snapshot) -> u8 {
    if snap.is_partial() {
        exit::PARTIAL
    } else {
        exit::OK
    }
}

/// The table: NAME HOST STATE IP CPUS MEM AGE, or a hint when there are no VMs.
pub(crate) fn render(vms: &[VmInfo], now_ms: u64) -> String {
    if vms.is_empty() {
        return "no VMs yet: create one with `banger vm create NAME`\n".to_owned();
    }
    let rows: Vec<Vec<String>> = vms
        .iter()
        .map(|v| {
            vec![
                v.name.to_string(),
                v.host.to_string(),
                v.state.to_string(),
                v.network.as_ref().map_or("-".into(), |n| n.ip.clone()),
                v.cpus.to_string(),
                format_mib(v.memory_mib),
                age(v.created_at_ms, now_ms),
            ]
        })
        .collect();
    output::table(
        &["NAME", "HOST", "STATE", "IP", "CPUS", "MEM", "AGE"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use banger_proto::MemMib;
    use banger_proto::vm::VmState;

    use super::*;
    use crate::commands::vm::resolve::tests::vm;

    #[test]
    fn list_renders_a_table_for_people() {
        let now = 10 * 86_400_000;
        let mut web = vm("web", "aaaa1111000000000000000000000000", "lab1");
        web.created_at_ms = now - 3 * 3_600_000;
        let mut db = vm("database", "bbbb0000000000000000000000000000", "lab2");
        db.state = VmState::Stopped;
        db.network = None;
        db.memory_mib = MemMib::new(512).unwrap();
        db.created_at_ms = now - 2 * 86_400_000;
        insta::assert_snapshot!(render(&[web, db], now));
    }

    #[test]
    fn an_empty_list_says_how_to_create_a_vm() {
        assert!(render(&[], 0).contains("banger vm create"));
    }
}
