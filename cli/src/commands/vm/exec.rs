//! `banger vm exec REF -- CMD ARGS...`: run a command in the guest through its agent and exit
//! with the command's status, its output on ours.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::time::Duration;

use banger_proto::agent::{ExecRequest, ExecResult};
use banger_proto::op::vm;
use banger_proto::vm::{VmExecRequest, VmInfo};

use super::units::parse_seconds;
use crate::{App, exit, output};

/// Exit status when the guest killed the command for running past its timeout (as
/// `timeout(1)` does).
pub(crate) const TIMED_OUT: u8 = 124;

/// Extra time the bus request gets beyond the command's own timeout, for the agent and the
/// controller to report back.
const REPLY_MARGIN: Duration = Duration::from_secs(10);

/// Flags of `banger vm exec`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  banger vm exec web -- uname -a
  banger vm exec web -e RUST_LOG=debug -w /root -- ./run-tests
  echo hello | banger vm exec web --stdin -- cat

The command is run directly, not through a shell: use `-- sh -c '...'` for pipes and globs.
Right after `vm start` (within 30 s of the boot) the command waits for the guest's agent to \
answer first, so `banger vm start web && banger vm exec web -- ...` works.

Exit status: the command's own exit status; 128+N when a signal N ended it; 124 when it ran past \
its timeout; 4 when the VM was not found or its agent did not answer; 1 for other failures.")]
pub struct ExecArgs {
    /// The VM: name, id or unique id prefix
    #[arg(value_name = "REF")]
    pub vm: String,
    /// Set an environment variable for the command: KEY=VALUE; repeatable
    #[arg(short, long, value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Working directory in the guest
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// Pass this command's standard input to the guest command (read to the end first)
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Kill the command after this long: seconds (90) or minutes (5m) [default: the agent's,
    /// 60s]
    #[arg(long, value_name = "TIME", value_parser = parse_seconds)]
    pub exec_timeout: Option<Duration>,
    /// The command and its arguments, after `--`
    #[arg(
        value_name = "CMD",
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Runs `banger vm exec`.
pub(crate) async fn run(app: &App, args: ExecArgs) -> anyhow::Result<u8> {
    let vm = super::resolve_single(app, &args.vm).await?;
    let stdin = if args.stdin {
        let mut buf = String::new();
        std::io::stdin().read_to_string(&mut buf)?;
        Some(buf)
    } else {
        None
    };
    let timeout_ms = args
        .exec_timeout
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let exec = ExecRequest {
        argv: args.command,
        env: args.env.into_iter().collect::<BTreeMap<_, _>>(),
        cwd: args.workdir,
        stdin,
        timeout_ms,
    };
    let result = send(app, &vm, exec, args.exec_timeout).await?;
    if app.json {
        output::print_json(&result)?;
    } else {
        std::io::stdout().write_all(result.stdout.as_bytes())?;
        std::io::stdout().flush()?;
        std::io::stderr().write_all(result.stderr.as_bytes())?;
    }
    if result.timed_out {
        eprintln!(
            "error: the command ran past its timeout in {} and was killed",
            vm.name
        );
    }
    Ok(status_of(&result))
}

/// Runs `exec` in `vm` through its controller and returns the collected result. The bus
/// deadline covers the command's own `timeout` plus a margin for the reply.
pub(crate) async fn send(
    app: &App,
    vm: &VmInfo,
    exec: ExecRequest,
    timeout: Option<Duration>,
) -> Result<ExecResult, banger_bus::RequestError> {
    let deadline = timeout.map_or(app.timeout, |t| app.timeout.max(t + REPLY_MARGIN));
    let req = VmExecRequest {
        id: vm.id.clone(),
        exec,
    };
    app.bus.call::<vm::Exec>(&vm.host, &req, deadline).await
}

/// The exit status that mirrors the guest command's.
pub(crate) fn status_of(r: &ExecResult) -> u8 {
    if r.timed_out {
        return TIMED_OUT;
    }
    match (r.exit_code, r.signal) {
        (Some(code), _) => u8::try_from(code.rem_euclid(256)).unwrap_or(exit::FAILURE),
        (None, Some(sig)) => u8::try_from(128 + sig.clamp(0, 127)).unwrap_or(exit::FAILURE),
        (None, None) => exit::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(code: Option<i32>, signal: Option<i32>, timed_out: bool) -> ExecResult {
        ExecResult {
            exit_code: code,
            signal,
            timed_out,
            stdout: String::new(),
            stderr: String::new(),
        }
    }

    #[test]
    fn exit_status_mirrors_the_guest_command() {
        assert_eq!(status_of(&result(Some(0), None, false)), 0);
        assert_eq!(status_of(&result(Some(3), None, false)), 3);
        assert_eq!(status_of(&result(Some(256 + 7), None, false)), 7);
        assert_eq!(status_of(&result(None, Some(9), false)), 137);
        assert_eq!(status_of(&result(None, Some(9), true)), TIMED_OUT);
        assert_eq!(status_of(&result(None, None, false)), exit::FAILURE);
    }

    #[test]
    fn env_pairs_need_a_key() {
        assert_eq!(
            parse_env("A=b=c").unwrap(),
            ("A".to_owned(), "b=c".to_owned())
        );
        assert!(parse_env("=x").is_err());
        assert!(parse_env("novalue").is_err());
    }
}
