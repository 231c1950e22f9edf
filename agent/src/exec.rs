//! `POST /v1/exec`: run a command and stream its output as newline-delimited JSON frames.
//!
//! The three steps every operation has: [`validate`] the request, [`start`] the command (errors
//! here still become a proper HTTP status, because no byte of the response has been sent), then
//! a driver task streams [`ExecFrame`]s into the response body until the command ends.
//!
//! - `argv[0]` is spawned directly with `argv[1..]` as its arguments: nothing is interpreted
//!   by a shell, so `;`, `$(...)` and globs in arguments are plain bytes.
//! - The command runs in its own process group. Past its timeout, when the caller goes away,
//!   or when the agent shuts down, the whole group gets SIGKILL, so `sh -c 'sleep 100'` leaves
//!   no orphaned `sleep` behind.
//! - A command that exits normally is not chased: a daemon it started in the background keeps
//!   running (as with `docker exec`). If such a daemon still holds the output pipes, the agent
//!   reads for [`DRAIN_AFTER_EXIT`] more and then reports the exit.
//! - Output frames flow through a small bounded channel: a caller that reads slowly slows the
//!   command down (its pipe fills) instead of growing the agent's memory.

use std::os::unix::process::ExitStatusExt as _;
use std::process::Stdio;
use std::time::Duration;

use banger_proto::agent::{
    AgentErrorCode, DEFAULT_EXEC_TIMEOUT_MS, ErrorBody, ExecFrame, ExecRequest, ExitStatus,
    OutputStream,
};
use bytes::Bytes;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::utf8::Utf8Stream;

/// How long to keep reading output after the command exited while something it left behind
/// still holds the pipes open: enough for output already written, short enough that a
/// backgrounded daemon does not hold the exec open.
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// How long the final frame may wait for a caller that stopped reading.
const FINAL_FRAME_DEADLINE: Duration = Duration::from_secs(30);

/// Bytes read from a pipe at a time; also the largest `data` of one output frame.
const READ_CHUNK: usize = 16 * 1024;

/// Frames buffered between the command and the connection.
const FRAME_QUEUE: usize = 16;

fn error(code: AgentErrorCode, message: impl Into<String>) -> ErrorBody {
    ErrorBody {
        code,
        message: message.into(),
    }
}

/// Checks the request before anything is spawned.
pub fn validate(req: &ExecRequest) -> Result<(), ErrorBody> {
    let invalid = |m: String| Err(error(AgentErrorCode::InvalidArgument, m));
    match req.argv.first() {
        None => return invalid("argv is empty: name the program to run".into()),
        Some(p) if p.is_empty() => return invalid("argv[0] is empty".into()),
        Some(_) => {}
    }
    if let Some(i) = req.argv.iter().position(|a| a.contains('\0')) {
        return invalid(format!("argv[{i}] contains a NUL byte"));
    }
    for (k, v) in &req.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return invalid(format!("environment variable name {k:?} is not valid"));
        }
        if v.contains('\0') {
            return invalid(format!("environment variable {k} contains a NUL byte"));
        }
    }
    if req
        .cwd
        .as_deref()
        .is_some_and(|c| c.is_empty() || c.contains('\0'))
    {
        return invalid("cwd is empty or contains a NUL byte".into());
    }
    if req.timeout_ms == Some(0) {
        return invalid("timeout_ms must be greater than zero".into());
    }
    Ok(())
}

/// The timeout an exec runs with: the request's (or the default), capped by the agent's max.
pub fn effective_timeout(req: &ExecRequest, max: Duration) -> Duration {
    Duration::from_millis(req.timeout_ms.unwrap_or(DEFAULT_EXEC_TIMEOUT_MS)).min(max)
}

/// Spawns the command and a task (owned by `tracker`) that streams its frames into the returned
/// receiver, each frame one JSON line.
pub async fn start(
    req: ExecRequest,
    max_timeout: Duration,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> Result<mpsc::Receiver<Bytes>, ErrorBody> {
    validate(&req)?;
    if let Some(cwd) = &req.cwd {
        match tokio::fs::metadata(cwd).await {
            Ok(m) if m.is_dir() => {}
            _ => {
                return Err(error(
                    AgentErrorCode::BadWorkingDirectory,
                    format!("working directory {cwd} does not exist or is not a directory"),
                ));
            }
        }
    }
    let timeout = effective_timeout(&req, max_timeout);
    let (program, args) = req
        .argv
        .split_first()
        .ok_or_else(|| error(AgentErrorCode::InvalidArgument, "argv is empty"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(&req.env)
        .stdin(if req.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills everything it started.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = &req.cwd {
        cmd.current_dir(cwd);
    }
    let mut child = cmd.spawn().map_err(|e| spawn_error(program, &e))?;
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    tracing::info!(program = %program, args = args.len(), pid = ?group, ?timeout, "exec started");

    let (tx, rx) = mpsc::channel(FRAME_QUEUE);
    let driver = Driver {
        stdin: child.stdin.take().zip(req.stdin.map(String::into_bytes)),
        child,
        group,
        reaped: false,
        deadline: Instant::now() + timeout,
        tx,
        shutdown,
    };
    tracker.spawn(driver.run());
    Ok(rx)
}

fn spawn_error(program: &str, e: &std::io::Error) -> ErrorBody {
    match e.kind() {
        std::io::ErrorKind::NotFound => error(
            AgentErrorCode::CommandNotFound,
            format!("command not found: {program}"),
        ),
        std::io::ErrorKind::PermissionDenied => error(
            AgentErrorCode::SpawnFailed,
            format!("permission denied running {program}"),
        ),
        _ => error(
            AgentErrorCode::SpawnFailed,
            format!("starting {program} failed: {e}"),
        ),
    }
}

/// Encodes one frame as a JSON line.
pub fn encode(frame: &ExecFrame) -> Bytes {
    match serde_json::to_vec(frame) {
        Ok(mut v) => {
            v.push(b'\n');
            Bytes::from(v)
        }
        // Serialising these plain structs cannot fail; keep the stream well-formed anyway.
        Err(_) => Bytes::from_static(
            b"{\"error\":{\"code\":\"internal\",\"message\":\"encoding a frame failed\"}}\n",
        ),
    }
}

/// Why the driver stopped before the command's exit was reported.
enum Abort {
    /// The caller closed the connection.
    CallerGone,
    /// The agent is shutting down.
    Shutdown,
}

/// Streams one running command's output and exit into the response.
struct Driver {
    child: Child,
    group: Option<Pid>,
    /// Whether the command (the group's leader) has been reaped: from then on its id no
    /// longer keeps the group id from being reused.
    reaped: bool,
    stdin: Option<(ChildStdin, Vec<u8>)>,
    deadline: Instant,
    tx: mpsc::Sender<Bytes>,
    shutdown: CancellationToken,
}

/// One output pipe being read.
struct Pipe<R> {
    reader: Option<R>,
    decoder: Utf8Stream,
    stream: OutputStream,
}

impl<R: AsyncRead + Unpin> Pipe<R> {
    fn new(reader: Option<R>, stream: OutputStream) -> Self {
        Self {
            reader,
            decoder: Utf8Stream::default(),
            stream,
        }
    }

    fn is_open(&self) -> bool {
        self.reader.is_some()
    }

    /// Reads the next chunk; `None` when the pipe just closed. Never called on a closed pipe.
    async fn read(&mut self, buf: &mut [u8]) -> Option<usize> {
        let r = self.reader.as_mut()?;
        match r.read(buf).await {
            Ok(0) | Err(_) => {
                self.reader = None;
                None
            }
            Ok(n) => Some(n),
        }
    }

    /// The frame for `n` bytes just read into `buf` (or, with `None`, the decoder's tail).
    fn frame(&mut self, read: Option<&[u8]>) -> Option<ExecFrame> {
        let data = match read {
            Some(bytes) => self.decoder.push(bytes),
            None => self.decoder.finish(),
        };
        (!data.is_empty()).then_some(ExecFrame::Output {
            stream: self.stream,
            data,
        })
    }
}

impl Driver {
    async fn run(mut self) {
        let outcome = self.stream_until_exit().await;
        let frame = match outcome {
            Ok(Ok(exit)) => {
                tracing::info!(pid = ?self.group, ?exit, "exec finished");
                ExecFrame::Exit { exit }
            }
            Ok(Err(e)) => {
                tracing::warn!(pid = ?self.group, error = %e, "waiting for the command failed");
                self.kill_group();
                ExecFrame::Error {
                    error: error(
                        AgentErrorCode::Internal,
                        format!("waiting for the command: {e}"),
                    ),
                }
            }
            Err(Abort::CallerGone) => {
                tracing::info!(pid = ?self.group, "caller went away; killing the command");
                self.kill_group();
                return;
            }
            Err(Abort::Shutdown) => {
                self.kill_group();
                ExecFrame::Error {
                    error: error(
                        AgentErrorCode::ShuttingDown,
                        "the agent is shutting down; the command was killed",
                    ),
                }
            }
        };
        let _ = tokio::time::timeout(FINAL_FRAME_DEADLINE, self.tx.send(encode(&frame))).await;
    }

    /// Streams output until the command has exited and its pipes are drained.
    async fn stream_until_exit(&mut self) -> Result<std::io::Result<ExitStatus>, Abort> {
        let mut out = Pipe::new(self.child.stdout.take(), OutputStream::Stdout);
        let mut err = Pipe::new(self.child.stderr.take(), OutputStream::Stderr);
        let mut out_buf = vec![0u8; READ_CHUNK];
        let mut err_buf = vec![0u8; READ_CHUNK];
        let mut stdin = self.stdin.take();
        let mut status: Option<std::io::Result<std::process::ExitStatus>> = None;
        let mut timed_out = false;
        let mut drain_until = None;

        while status.is_none() || out.is_open() || err.is_open() {
            let frame = tokio::select! {
                n = out.read(&mut out_buf), if out.is_open() => {
                    out.frame(n.and_then(|n| out_buf.get(..n)))
                }
                n = err.read(&mut err_buf), if err.is_open() => {
                    err.frame(n.and_then(|n| err_buf.get(..n)))
                }
                () = write_stdin(&mut stdin), if stdin.is_some() => None,
                s = self.child.wait(), if status.is_none() => {
                    self.reaped = true;
                    status = Some(s);
                    drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
                    None
                }
                () = tokio::time::sleep_until(self.deadline), if status.is_none() && !timed_out => {
                    tracing::info!(pid = ?self.group, "exec timed out; killing its process group");
                    timed_out = true;
                    self.kill_group();
                    None
                }
                () = sleep_until_opt(drain_until) => {
                    tracing::debug!(pid = ?self.group, "output pipes still open after exit");
                    break;
                }
                () = self.tx.closed() => return Err(Abort::CallerGone),
                () = self.shutdown.cancelled() => return Err(Abort::Shutdown),
            };
            if let Some(frame) = frame {
                self.send(frame).await?;
            }
        }
        // The loop only ends once `status` is set.
        let status = status.unwrap_or_else(|| Err(std::io::Error::other("no exit status")));
        Ok(status.map(|s| ExitStatus {
            code: s.code(),
            signal: s.signal(),
            timed_out,
        }))
    }

    /// Sends one frame; a full queue waits, but never past the timeout, the caller leaving or
    /// shutdown.
    async fn send(&mut self, frame: ExecFrame) -> Result<(), Abort> {
        let bytes = encode(&frame);
        tokio::select! {
            r = self.tx.send(bytes) => r.map_err(|_| Abort::CallerGone),
            () = tokio::time::sleep_until(self.deadline) => {
                // The caller stopped reading and the command is out of time: treat the caller
                // as gone (the command is killed).
                Err(Abort::CallerGone)
            }
            () = self.shutdown.cancelled() => Err(Abort::Shutdown),
        }
    }

    fn kill_group(&self) {
        let Some(group) = self.group else {
            return;
        };
        if self.reaped {
            // Only what is left of the group, member by member: once the last member is
            // gone, the id could name a new group.
            banger_procid::signal_group_members(group.as_raw(), Signal::SIGKILL);
        } else {
            // The leader is not reaped: its pid, the group's id, names nobody else.
            // ESRCH: the group is already gone, which is what we wanted.
            let _ = killpg(group, Signal::SIGKILL);
        }
    }
}

/// Writes the request's stdin and closes it (EOF for the command). A command that exits
/// without reading it is not an error.
async fn write_stdin(stdin: &mut Option<(ChildStdin, Vec<u8>)>) {
    if let Some((mut pipe, data)) = stdin.take() {
        if let Err(e) = pipe.write_all(&data).await {
            tracing::debug!(error = %e, "writing the command's stdin stopped");
        }
        drop(pipe);
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(argv: &[&str]) -> ExecRequest {
        ExecRequest::new(argv.iter().copied())
    }

    #[test]
    fn bad_requests_are_refused_before_spawning() {
        assert!(validate(&req(&["true"])).is_ok());
        for (bad, why) in [
            (req(&[]), "empty"),
            (req(&[""]), "empty"),
            (req(&["echo", "a\0b"]), "NUL"),
            (
                ExecRequest {
                    timeout_ms: Some(0),
                    ..req(&["true"])
                },
                "timeout_ms",
            ),
            (
                ExecRequest {
                    env: [("A=B".to_owned(), "c".to_owned())].into(),
                    ..req(&["true"])
                },
                "not valid",
            ),
        ] {
            let e = validate(&bad).unwrap_err();
            assert_eq!(e.code, AgentErrorCode::InvalidArgument);
            assert!(e.message.contains(why), "{}", e.message);
        }
    }

    #[test]
    fn the_timeout_defaults_and_is_capped() {
        let max = Duration::from_secs(10);
        assert_eq!(effective_timeout(&req(&["x"]), max), max);
        let short = ExecRequest {
            timeout_ms: Some(250),
            ..req(&["x"])
        };
        assert_eq!(effective_timeout(&short, max), Duration::from_millis(250));
        assert_eq!(
            effective_timeout(&req(&["x"]), Duration::from_secs(3600)),
            Duration::from_millis(DEFAULT_EXEC_TIMEOUT_MS)
        );
    }

    async fn collect(mut rx: mpsc::Receiver<Bytes>) -> Vec<ExecFrame> {
        let mut frames = Vec::new();
        while let Some(b) = rx.recv().await {
            frames.push(serde_json::from_slice(&b).unwrap());
        }
        frames
    }

    #[tokio::test]
    async fn arguments_reach_the_program_without_a_shell() {
        let tracker = TaskTracker::new();
        let rx = start(
            req(&["printf", "%s|", "$(id)", "a;b", "*"]),
            Duration::from_secs(10),
            CancellationToken::new(),
            &tracker,
        )
        .await
        .unwrap();
        let frames = collect(rx).await;
        let out: String = frames
            .iter()
            .filter_map(|f| match f {
                ExecFrame::Output { data, .. } => Some(data.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(out, "$(id)|a;b|*|");
    }

    #[tokio::test]
    async fn stdin_env_and_cwd_are_applied() {
        let tracker = TaskTracker::new();
        let dir = tempfile::tempdir().unwrap();
        let r = ExecRequest {
            argv: vec!["sh".into(), "-c".into(), "cat; echo \" $FOO\"; pwd".into()],
            env: [("FOO".to_owned(), "bar".to_owned())].into(),
            cwd: Some(dir.path().to_string_lossy().into_owned()),
            stdin: Some("in".into()),
            timeout_ms: None,
        };
        let frames = collect(
            start(
                r,
                Duration::from_secs(10),
                CancellationToken::new(),
                &tracker,
            )
            .await
            .unwrap(),
        )
        .await;
        let out: String = frames
            .iter()
            .filter_map(|f| match f {
                ExecFrame::Output { data, .. } => Some(data.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(out, format!("in bar\n{}\n", dir.path().display()));
    }

    #[tokio::test]
    async fn a_missing_working_directory_is_a_clear_error() {
        let tracker = TaskTracker::new();
        let r = ExecRequest {
            cwd: Some("/nonexistent/banger".into()),
            ..req(&["true"])
        };
        let e = start(
            r,
            Duration::from_secs(1),
            CancellationToken::new(),
            &tracker,
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, AgentErrorCode::BadWorkingDirectory);
    }

    #[tokio::test]
    async fn shutdown_kills_the_running_command_and_says_so() {
        let tracker = TaskTracker::new();
        let token = CancellationToken::new();
        let mut rx = start(
            req(&["sh", "-c", "echo started; exec sleep 60"]),
            Duration::from_secs(120),
            token.clone(),
            &tracker,
        )
        .await
        .unwrap();
        let first: ExecFrame = serde_json::from_slice(&rx.recv().await.unwrap()).unwrap();
        assert!(matches!(first, ExecFrame::Output { .. }));
        token.cancel();
        let last: ExecFrame = serde_json::from_slice(&rx.recv().await.unwrap()).unwrap();
        match last {
            ExecFrame::Error { error } => assert_eq!(error.code, AgentErrorCode::ShuttingDown),
            other => panic!("expected a shutting_down error frame, got {other:?}"),
        }
        tracker.close();
        tracker.wait().await;
    }
}
