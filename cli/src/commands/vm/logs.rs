//! `banger vm logs REF [-f] [--vmm]`: the guest's serial console (or the hypervisor's log),
//! read in windows through the controller; `-f` keeps asking from where the last read ended.

use std::io::Write as _;
use std::time::Duration;

use banger_proto::ErrorCode;
use banger_proto::op::vm;
use banger_proto::vm::{LogSource, LogsReply, LogsRequest, VmInfo};

use crate::{App, exit};

/// How often `-f` asks for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(500);
/// The most `-f` asks for at once.
const FOLLOW_CHUNK: u64 = 1024 * 1024;

/// Flags of `banger vm logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The VM: name, id or unique id prefix
    #[arg(value_name = "REF")]
    pub vm: String,
    /// Keep printing new output as it arrives, until Ctrl-C
    #[arg(short, long)]
    pub follow: bool,
    /// Show the hypervisor's (Firecracker's) own log instead of the guest's serial console
    #[arg(long)]
    pub vmm: bool,
    /// How much of the end of the log to show first, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024)]
    pub tail: u64,
}

/// Runs `banger vm logs`.
pub(crate) async fn run(app: &App, args: LogsArgs) -> anyhow::Result<u8> {
    let vm = super::resolve_single(app, &args.vm).await?;
    let source = if args.vmm {
        LogSource::Vmm
    } else {
        LogSource::Serial
    };
    let mut req = LogsRequest {
        id: vm.id.clone(),
        source,
        offset: None,
        max_bytes: Some(args.tail),
    };
    let first = read(app, &vm, &req).await?;
    emit(app, &first)?;
    if !args.follow {
        return Ok(exit::OK);
    }
    req.offset = Some(first.next_offset);
    req.max_bytes = Some(FOLLOW_CHUNK);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return Ok(exit::OK),
            () = tokio::time::sleep(FOLLOW_POLL) => {}
        }
        match read(app, &vm, &req).await {
            Ok(r) => {
                emit(app, &r)?;
                req.offset = Some(r.next_offset);
            }
            // A slow answer is not the end of the log: ask again.
            Err(e) if e.code() == ErrorCode::Timeout => {
                tracing::debug!(error = %e, "log poll timed out");
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads one window of a VM's log through its controller.
pub(crate) async fn read(
    app: &App,
    vm: &VmInfo,
    req: &LogsRequest,
) -> Result<LogsReply, banger_bus::RequestError> {
    app.bus.call::<vm::Logs>(&vm.host, req, app.timeout).await
}

fn emit(app: &App, r: &LogsReply) -> anyhow::Result<()> {
    if app.json {
        // One object per line, so `-f --json` can be read as a stream.
        println!("{}", serde_json::to_string(r)?);
        return Ok(());
    }
    if r.data.is_empty() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    out.write_all(r.data.as_bytes())?;
    out.flush()?;
    Ok(())
}
