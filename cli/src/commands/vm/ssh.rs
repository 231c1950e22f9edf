//! `banger vm ssh REF [-- SSH_ARGS]`: ssh into the guest as root with the runtime bundle's key,
//! and when the session ends while the VM still runs (its controller's `vm.health` answers),
//! say so and how to stop it. `banger tui` runs sessions through the same functions.

use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_bus::RequestError;
use banger_proto::op::vm;
use banger_proto::vm::{VmInfo, VmRefRequest, VmState};
use banger_proto::{ApiError, ErrorCode};

use crate::{App, exit};

/// The runtime bundle's private key, relative to the state directory; images built by banger
/// trust its public half.
pub(crate) const BUNDLE_KEY: &str = "ssh/id_ed25519";

/// How long the check after the session may take: it only decides whether to print a reminder.
const REMINDER_CHECK: Duration = Duration::from_secs(5);

/// Flags of `banger vm ssh`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  banger vm ssh web
  banger vm ssh web -- uptime
  banger vm ssh web -- -L 8080:localhost:80

Uses `ssh` from PATH with the key <state_dir>/ssh/id_ed25519 when it exists; the guest's host \
key is not recorded (guests are recreated often). When the session ends and the VM is still \
running, banger reminds you how to stop it.

Exit status: ssh's own exit status; 4 when the VM was not found; 1 when it is not running.")]
pub struct SshArgs {
    /// The VM: name, id or unique id prefix
    #[arg(value_name = "REF")]
    pub vm: String,
    /// Log in as this user
    #[arg(short = 'l', long, value_name = "USER", default_value = "root")]
    pub user: String,
    /// More arguments for ssh, after `--` (options, or a command to run in the guest)
    #[arg(last = true, value_name = "SSH_ARGS")]
    pub ssh_args: Vec<String>,
}

/// The arguments given to `ssh`.
pub(crate) fn ssh_argv(ip: &str, user: &str, key: Option<&Path>, extra: &[String]) -> Vec<String> {
    let mut argv: Vec<String> = [
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if let Some(k) = key {
        argv.push("-i".into());
        argv.push(k.display().to_string());
        argv.push("-o".into());
        argv.push("IdentitiesOnly=yes".into());
    }
    argv.push(format!("{user}@{ip}"));
    argv.extend(extra.iter().cloned());
    argv
}

/// What to print after the session when the VM is still running.
pub(crate) fn reminder(vm: &VmInfo) -> Option<String> {
    (vm.state == VmState::Running).then(|| {
        format!(
            "{} is still running; stop it with `banger vm stop {}`",
            vm.name, vm.name
        )
    })
}

/// Runs `banger vm ssh`.
pub(crate) async fn run(app: &App, args: SshArgs) -> anyhow::Result<u8> {
    let vm = super::resolve_single(app, &args.vm).await?;
    let argv = argv_for(app, &vm, &args.user, &args.ssh_args)?;
    let status = run_ssh(&argv).await?;
    if let Some(r) = reminder_after_session(app, &vm).await {
        eprintln!("{r}");
    }
    Ok(exit_status(status))
}

/// The `ssh` arguments for a session in `vm` as `user`, or a `conflict` error when the VM is
/// not running (it has no address to reach).
pub(crate) fn argv_for(
    app: &App,
    vm: &VmInfo,
    user: &str,
    extra: &[String],
) -> Result<Vec<String>, ApiError> {
    let ip = match (&vm.network, vm.state) {
        (Some(n), VmState::Running) => n.ip.clone(),
        _ => {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "{} is {}, not running: start it with `banger vm start {}`",
                    vm.name, vm.state, vm.name
                ),
            ));
        }
    };
    let key: PathBuf = app.config.state_dir.join(BUNDLE_KEY);
    let key = key.is_file().then_some(key);
    Ok(ssh_argv(&ip, user, key.as_deref(), extra))
}

/// Runs `ssh` with `argv` on this terminal and waits for the session to end.
pub(crate) async fn run_ssh(argv: &[String]) -> anyhow::Result<std::process::ExitStatus> {
    tracing::debug!(?argv, "running ssh");
    tokio::process::Command::new("ssh")
        .args(argv)
        .status()
        .await
        .map_err(|e| anyhow::anyhow!("running ssh (is openssh-client installed?): {e}"))
}

/// After a session: is the VM still up? Asks its controller's `vm.health` (an answer means the
/// VM runs; `conflict` or `not_found` mean it does not), falling back to `vm.get` when the
/// agent cannot say, and returns the reminder to print when it still runs.
pub(crate) async fn reminder_after_session(app: &App, vm: &VmInfo) -> Option<String> {
    let timeout = app.timeout.min(REMINDER_CHECK);
    let health = app
        .bus
        .call::<vm::Health>(&vm.host, &VmRefRequest { id: vm.id.clone() }, timeout)
        .await;
    match health {
        Ok(_) => reminder(&VmInfo {
            state: VmState::Running,
            ..vm.clone()
        }),
        Err(RequestError::Remote(e))
            if matches!(e.code, ErrorCode::Conflict | ErrorCode::NotFound) =>
        {
            None
        }
        Err(e) => {
            tracing::debug!(error = %e, "asking the VM's health after ssh");
            match super::show::get(app, vm, timeout).await {
                Ok(now) => reminder(&now),
                Err(e) => {
                    tracing::debug!(error = %e, "checking the VM after ssh");
                    None
                }
            }
        }
    }
}

fn exit_status(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c.rem_euclid(256)).unwrap_or(exit::FAILURE),
        (None, Some(sig)) => u8::try_from(128 + sig.clamp(0, 127)).unwrap_or(exit::FAILURE),
        (None, None) => exit::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::vm::resolve::tests::vm;

    #[test]
    fn ssh_gets_the_bundle_key_and_the_extra_arguments_last() {
        let argv = ssh_argv(
            "172.16.0.2",
            "root",
            Some(Path::new("/var/lib/banger/ssh/id_ed25519")),
            &["--".into(), "uptime".into()],
        );
        assert_eq!(
            argv.join(" "),
            "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
             -i /var/lib/banger/ssh/id_ed25519 -o IdentitiesOnly=yes root@172.16.0.2 -- uptime"
        );
        let without = ssh_argv("10.0.0.2", "dev", None, &[]);
        assert!(!without.contains(&"-i".to_owned()));
        assert_eq!(without.last().map(String::as_str), Some("dev@10.0.0.2"));
    }

    #[test]
    fn the_reminder_names_the_vm_and_the_stop_command() {
        let mut v = vm("web", "aaaa1111000000000000000000000000", "h1");
        assert_eq!(
            reminder(&v).as_deref(),
            Some("web is still running; stop it with `banger vm stop web`")
        );
        v.state = VmState::Stopped;
        assert_eq!(reminder(&v), None);
    }
}
