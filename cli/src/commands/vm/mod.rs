//! `banger vm ...`: create, list, inspect and run VMs on every host.
//!
//! Commands that take VMs accept a name, a full id or a unique id prefix, resolved against one
//! `vm.list` snapshot of every host, filtered by the refs so the answers stay small
//! ([`snapshot`], [`resolve`]). Each request then goes to the
//! owning host's controller on `<p>.host.<host>.vm.<op>`. The batch commands ([`batch`]) take
//! several refs and handle them at the same time.

pub mod batch;
pub mod create;
pub(crate) mod create_many;
pub mod exec;
pub mod inspect;
pub mod list;
pub mod logs;
pub(crate) mod resolve;
pub mod show;
pub(crate) mod snapshot;
pub mod ssh;
pub(crate) mod units;
pub(crate) mod wait;

use banger_proto::subject::VmOp;
use banger_proto::vm::VmInfo;

use crate::App;

/// VM commands.
#[derive(Debug, clap::Subcommand)]
pub enum VmCommand {
    /// Create VMs, one per name, at the same time (and start them, unless --no-start)
    Create(create::CreateArgs),
    /// List the VMs of every host: name, host, state, address, size, age
    #[command(visible_alias = "ls")]
    List(list::ListArgs),
    /// Show everything about one VM
    Show(inspect::RefArgs),
    /// Start stopped VMs
    Start(batch::BatchArgs),
    /// Stop VMs: ask the guest to shut down, force it after a grace period
    Stop(batch::BatchArgs),
    /// Stop then start VMs
    Restart(batch::BatchArgs),
    /// Stop VMs at once, without asking the guest (like pulling the plug)
    Kill(batch::BatchArgs),
    /// Delete VMs and everything they own: disks, address, DNS name (no confirmation)
    #[command(visible_alias = "rm")]
    Delete(batch::BatchArgs),
    /// Change the vCPUs, memory or work disk size of VMs, applied at their next start
    Set(batch::SetArgs),
    /// Print a VM's serial console (or, with --vmm, the hypervisor's log)
    Logs(logs::LogsArgs),
    /// Show a VM's resource use, from the hypervisor and the guest agent
    Stats(inspect::RefArgs),
    /// Ask a VM's guest agent whether it is healthy (exit 0 when it is); a VM whose guest died
    /// is failed, and the error says why (exit status, hint, the console's last lines)
    Health(inspect::RefArgs),
    /// Run a command in a VM and exit with its status: banger vm exec web -- uname -a
    Exec(exec::ExecArgs),
    /// Open an ssh session to a VM as root (or run one command with -- CMD)
    Ssh(ssh::SshArgs),
}

/// Runs a VM command.
pub async fn run(app: &App, cmd: VmCommand) -> anyhow::Result<u8> {
    use batch::Action;
    match cmd {
        VmCommand::Create(a) => create::run(app, a).await,
        VmCommand::List(a) => list::run(app, a).await,
        VmCommand::Show(a) => show::run(app, a).await,
        VmCommand::Start(a) => batch::run(app, &a.refs, Action::Lifecycle(VmOp::Start)).await,
        VmCommand::Stop(a) => batch::run(app, &a.refs, Action::Lifecycle(VmOp::Stop)).await,
        VmCommand::Restart(a) => batch::run(app, &a.refs, Action::Lifecycle(VmOp::Restart)).await,
        VmCommand::Kill(a) => batch::run(app, &a.refs, Action::Lifecycle(VmOp::Kill)).await,
        VmCommand::Delete(a) => batch::run(app, &a.refs, Action::Lifecycle(VmOp::Delete)).await,
        VmCommand::Set(a) => {
            let action = Action::Set {
                cpus: a.cpus,
                memory: a.memory,
                disk: a.disk,
            };
            batch::run(app, &a.refs, action).await
        }
        VmCommand::Logs(a) => logs::run(app, a).await,
        VmCommand::Stats(a) => inspect::stats(app, a).await,
        VmCommand::Health(a) => inspect::health(app, a).await,
        VmCommand::Exec(a) => exec::run(app, a).await,
        VmCommand::Ssh(a) => ssh::run(app, a).await,
    }
}

/// Resolves one reference from a fresh snapshot of the VMs it could name; warns about answers
/// that could not be read.
async fn resolve_single(app: &App, reference: &str) -> anyhow::Result<VmInfo> {
    let snap = snapshot::fetch(app, &[reference.to_owned()]).await?;
    for e in &snap.bad_replies {
        eprintln!("warning: unreadable vm.list answer: {e}");
    }
    Ok(snap.resolve_one(reference)?)
}
