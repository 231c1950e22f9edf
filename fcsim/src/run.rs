//! The process: bind the API socket, serve until Ctrl+Alt+Del or a signal, clean up.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use banger_firecracker::schema::ApiSchema;
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Mutex, mpsc};

use crate::api::{self, Api};
use crate::cli::{self, Args, VERSION_LINE};
use crate::faults::{FAULTS_ENV, Fault, Faults};
use crate::log::{self, Level};
use crate::vmm::{Exit, Vmm};

/// How long shutdown waits for in-flight API replies (the `SendCtrlAltDel` answer) to go out.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs the simulator; the exit code is the process's.
pub(crate) async fn run(args: Args) -> ExitCode {
    let Some(level) = Level::parse(&args.level) else {
        eprintln!("banger-fcsim: invalid --level {:?}", args.level);
        return ExitCode::from(2);
    };
    log::configure(&args.id, level, args.show_level);
    if let Some(path) = &args.log_path
        && let Err(e) = log::set_path(path)
    {
        eprintln!(
            "banger-fcsim: cannot open --log-path {}: {e}",
            path.display()
        );
        return ExitCode::from(1);
    }
    let env = std::env::var(FAULTS_ENV).ok();
    let faults = match Faults::resolve(&args.faults, env.as_deref(), &args.id) {
        Ok(f) => f,
        Err(e) => {
            log::error(&format!("{FAULTS_ENV} / --fault: {e}"));
            eprintln!("banger-fcsim: {e}");
            return ExitCode::from(2);
        }
    };
    let schema = match ApiSchema::firecracker() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("banger-fcsim: the embedded api definition does not load: {e}");
            return ExitCode::from(1);
        }
    };
    log::info(&format!(
        "Running {VERSION_LINE}: a test double of Firecracker, no guest kernel runs"
    ));
    if !faults.list().is_empty() {
        let names: Vec<String> = faults.list().iter().map(ToString::to_string).collect();
        log::warn(&format!("faults in force: {}", names.join(", ")));
    }
    crate::guest::sweep_stale_runtime_dirs();
    // Firecracker refuses an existing socket path.
    let listener = match UnixListener::bind(&args.api_sock) {
        Ok(l) => l,
        Err(e) => {
            let msg = format!(
                "Failed to open the API socket at: {}. Check that it is not already used: {e}",
                args.api_sock.display()
            );
            log::error(&msg);
            eprintln!("banger-fcsim: {msg}");
            return ExitCode::from(1);
        }
    };
    let (exit_tx, mut exit_rx) = mpsc::unbounded_channel();
    let agent_bin = cli::agent_bin(args.agent_bin.as_ref());
    let api = Arc::new(Api {
        vmm: Mutex::new(Vmm::new(
            args.id.clone(),
            faults.clone(),
            agent_bin,
            exit_tx,
        )),
        schema,
        max_body: args.http_api_max_payload_size,
        open_connections: AtomicUsize::new(0),
        closing: tokio::sync::watch::Sender::new(false),
    });
    let server = if faults.has(Fault::RefuseApi) {
        log::warn("fault refuse-api: the API socket is bound but no request is answered");
        tokio::spawn(api::serve_refusing(listener))
    } else {
        tokio::spawn(api::serve(listener, Arc::clone(&api)))
    };
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            eprintln!("banger-fcsim: cannot install signal handlers");
            return ExitCode::from(1);
        }
    };
    let why = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        Some(exit) = exit_rx.recv() => match exit {
            Exit::CtrlAltDel => "Ctrl+Alt+Del",
            Exit::GuestReboot => "the guest rebooted after a kernel panic",
        },
    };
    log::info(&format!("{why}: shutting down"));
    server.abort();
    let _ = server.await;
    api.closing.send_replace(true);
    drain(&api.open_connections).await;
    api.vmm
        .lock()
        .await
        .shutdown(Path::new(&args.api_sock))
        .await;
    log::info("banger-fcsim exiting");
    ExitCode::SUCCESS
}

/// Waits (bounded) until no API connection is open, so the last reply reaches its caller.
async fn drain(open: &AtomicUsize) {
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    while open.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
