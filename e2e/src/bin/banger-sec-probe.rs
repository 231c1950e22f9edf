//! The security suite's probe (`e2e/tests/security.rs`): run as an unprivileged user, it tries
//! each door it is given and says whether the door opened.
//!
//! Reads attempts from stdin, one per line, `<action> <target>`:
//!
//! | action | what it tries | open when |
//! | --- | --- | --- |
//! | `read PATH` | list a directory, or open a file for reading | it works |
//! | `write PATH` | create a file in a directory (removed again), or open a file for appending (nothing is written) | it works |
//! | `http PATH` | connect to a Unix socket and send `GET /machine-config` (the hypervisor API) | the connect works |
//! | `vsock PATH` | connect to a Unix socket, send `CONNECT 52` (hybrid vsock), then an agent exec | the connect works |
//! | `agent PATH` | connect to a Unix socket and send an agent exec of `id` | the agent answers |
//! | `nats HOST:PORT` | a NATS client's `CONNECT` without credentials, then `PING` | the server answers `PONG` |
//!
//! Prints one line per attempt: `<action> <target>: refused (<why>)` or
//! `<action> <target>: OPEN (<what came back>)`, and exits 0; the test decides. It writes
//! nothing anywhere: a file opened for writing is closed untouched, a probe file it managed to
//! create is removed.

use std::fs::{self, OpenOptions};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// How long a door may take to answer.
const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// The name of the file `write DIR` tries to create.
const PROBE_FILE: &str = ".banger-sec-probe";

/// One attempt's outcome: `Ok` what came back (the door is open), `Err` why it was refused.
type Outcome = Result<String, String>;

fn main() -> ExitCode {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else {
            eprintln!("banger-sec-probe: reading stdin failed");
            return ExitCode::from(2);
        };
        let Some((action, target)) = line.trim().split_once(' ') else {
            continue;
        };
        let outcome = match action {
            "read" => read(Path::new(target)),
            "write" => write(Path::new(target)),
            "http" => http(Path::new(target)),
            "vsock" => vsock(Path::new(target)),
            "agent" => agent(Path::new(target)),
            "nats" => nats(target),
            other => {
                eprintln!("banger-sec-probe: unknown action {other:?}");
                return ExitCode::from(2);
            }
        };
        match outcome {
            Ok(what) => println!("{action} {target}: OPEN ({})", one_line(&what)),
            Err(why) => println!("{action} {target}: refused ({})", one_line(&why)),
        }
    }
    ExitCode::SUCCESS
}

fn one_line(s: &str) -> String {
    let s: String = s.chars().take(200).collect();
    s.replace(['\r', '\n'], " ").trim().to_owned()
}

fn read(path: &Path) -> Outcome {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::read_dir(path)
            .map(|d| format!("listed {} entries", d.count()))
            .map_err(|e| e.to_string()),
        Ok(_) => {
            let mut f = OpenOptions::new()
                .read(true)
                .open(path)
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 64];
            let n = f.read(&mut buf).map_err(|e| e.to_string())?;
            Ok(format!("read {n} bytes"))
        }
        Err(e) => Err(e.to_string()),
    }
}

fn write(path: &Path) -> Outcome {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let probe = path.join(PROBE_FILE);
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&probe)
                .map_err(|e| e.to_string())?;
            let _ = fs::remove_file(&probe);
            Ok(format!("created {}", probe.display()))
        }
        Ok(_) => OpenOptions::new()
            .append(true)
            .open(path)
            .map(|_| "opened for writing".to_owned())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

fn connect(path: &Path) -> Result<UnixStream, String> {
    let s = UnixStream::connect(path).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// What the other side says within the timeout (connected is already "open").
fn answer(s: &mut UnixStream) -> String {
    let mut buf = vec![0u8; 512];
    match s.read(&mut buf) {
        Ok(n) => format!("connected; answer: {}", String::from_utf8_lossy(&buf[..n])),
        Err(e) => format!("connected; no answer: {e}"),
    }
}

fn http(path: &Path) -> Outcome {
    let mut s = connect(path)?;
    let _ = s.write_all(b"GET /machine-config HTTP/1.0\r\nHost: localhost\r\n\r\n");
    Ok(answer(&mut s))
}

/// An agent exec of `id`, as the controller sends it.
const EXEC_ID: &[u8] =
    b"POST /v1/exec HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\n\
Content-Length: 17\r\n\r\n{\"argv\":[\"id\"]}\r\n";

fn vsock(path: &Path) -> Outcome {
    let mut s = connect(path)?;
    let _ = s.write_all(b"CONNECT 52\n");
    let mut first = answer(&mut s);
    if s.write_all(EXEC_ID).is_ok() {
        first.push_str("; exec: ");
        first.push_str(&answer(&mut s));
    }
    Ok(first)
}

const REFUSED_BY_AGENT: &str = "connected, but closed unanswered: the agent refused this peer";

/// The agent is open when it answers; one that accepts and closes at once refused the peer.
fn agent(path: &Path) -> Outcome {
    let mut s = connect(path)?;
    let _ = s.write_all(EXEC_ID);
    let mut buf = vec![0u8; 512];
    match s.read(&mut buf) {
        Ok(n) if n > 0 => Ok(format!(
            "connected; answer: {}",
            String::from_utf8_lossy(&buf[..n])
        )),
        // Closed before reading the request: EOF, or a reset because the request was unread.
        Ok(_) => Err(REFUSED_BY_AGENT.into()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Err(REFUSED_BY_AGENT.into()),
        Err(e) => Err(format!("connected, but no answer: {e}")),
    }
}

fn nats(addr: &str) -> Outcome {
    let s = TcpStream::connect(addr).map_err(|e| format!("no TCP connection: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let mut info = String::new();
    r.read_line(&mut info).map_err(|e| e.to_string())?;
    if !info.starts_with("INFO") {
        return Err(format!("not a NATS server: {info}"));
    }
    w.write_all(
        b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"banger-sec-probe\"}\r\nPING\r\n",
    )
    .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    r.read_line(&mut reply)
        .map_err(|e| format!("connection closed: {e}"))?;
    if reply.starts_with("PONG") {
        Ok("PONG without credentials".to_owned())
    } else if reply.is_empty() {
        Err("connection closed".to_owned())
    } else {
        Err(reply)
    }
}
