//! The streaming side of `POST /v1/exec`: newline-delimited [`ExecFrame`]s read as they
//! arrive.

use banger_proto::agent::{ExecFrame, ExecResult, OutputStream};
use bytes::BytesMut;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::{ClientError, ConnTask};

/// The longest frame line accepted; the agent sends at most 16 KiB of output per frame (up to
/// six times that once JSON-escaped).
const MAX_FRAME_LINE: usize = 1024 * 1024;

/// A running exec's frames. Dropping it closes the connection, and the agent then kills the
/// command.
pub struct ExecStream {
    body: Incoming,
    buf: BytesMut,
    deadline: Instant,
    started: Instant,
    body_done: bool,
    finished: bool,
    _conn: ConnTask,
}

impl std::fmt::Debug for ExecStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecStream")
            .field("deadline", &self.deadline)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl ExecStream {
    pub(crate) fn new(body: Incoming, conn: ConnTask, deadline: Instant) -> Self {
        Self {
            body,
            buf: BytesMut::new(),
            deadline,
            started: Instant::now(),
            body_done: false,
            finished: false,
            _conn: conn,
        }
    }

    /// The next frame as soon as the agent sends it; `None` after the last one (an `Exit` or
    /// `Error` frame). A stream that ends without one is [`ClientError::Truncated`].
    pub async fn next_frame(&mut self) -> Result<Option<ExecFrame>, ClientError> {
        if self.finished {
            return Ok(None);
        }
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(pos + 1);
                let line = line.get(..pos).unwrap_or_default();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let frame: ExecFrame =
                    serde_json::from_slice(line).map_err(|source| ClientError::Decode {
                        what: "exec frame",
                        source,
                    })?;
                if !matches!(frame, ExecFrame::Output { .. }) {
                    self.finished = true;
                }
                return Ok(Some(frame));
            }
            if self.body_done {
                return Err(ClientError::Truncated);
            }
            if self.buf.len() > MAX_FRAME_LINE {
                return Err(ClientError::Protocol(format!(
                    "a frame line is longer than {MAX_FRAME_LINE} bytes"
                )));
            }
            let next = tokio::time::timeout_at(self.deadline, self.body.frame())
                .await
                .map_err(|_| ClientError::Timeout {
                    op: "exec",
                    after: self.deadline.saturating_duration_since(self.started),
                })?;
            match next {
                None => self.body_done = true,
                Some(Err(source)) => {
                    return Err(ClientError::Http {
                        step: "reading the exec stream",
                        source,
                    });
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// Reads every frame and returns the collected output and exit. An `Error` frame becomes
    /// [`ClientError::Agent`].
    pub async fn collect(mut self) -> Result<ExecResult, ClientError> {
        let mut result = ExecResult {
            exit_code: None,
            signal: None,
            timed_out: false,
            stdout: String::new(),
            stderr: String::new(),
        };
        while let Some(frame) = self.next_frame().await? {
            match frame {
                ExecFrame::Output {
                    stream: OutputStream::Stdout,
                    data,
                } => result.stdout.push_str(&data),
                ExecFrame::Output {
                    stream: OutputStream::Stderr,
                    data,
                } => result.stderr.push_str(&data),
                ExecFrame::Exit { exit } => {
                    result.exit_code = exit.code;
                    result.signal = exit.signal;
                    result.timed_out = exit.timed_out;
                    return Ok(result);
                }
                ExecFrame::Error { error } => {
                    return Err(ClientError::Agent {
                        status: 200,
                        code: error.code,
                        message: error.message,
                    });
                }
            }
        }
        Err(ClientError::Truncated)
    }
}
