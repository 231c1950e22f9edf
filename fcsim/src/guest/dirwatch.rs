//! Waiting for a file to appear in a directory without looking every millisecond.
//!
//! The guest's agent binds its socket in the simulator's guest directory some time after it
//! is spawned (longer when many guests boot at once). Looking for it every millisecond costs a
//! wake-up and a `connect` per millisecond per booting guest: 100 guests booting at once made
//! 100,000 wake-ups a second. An inotify watch on the directory wakes the simulator when an
//! entry is created in it instead; the caller still confirms with its own check, and keeps a
//! slow look as a safety net.

use std::io;
use std::os::fd::{AsFd as _, AsRawFd, RawFd};
use std::path::Path;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// An inotify instance, as tokio needs it (a raw descriptor).
struct Watch(Inotify);

impl AsRawFd for Watch {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// A watch on the entries created in (or moved into) one directory.
pub(crate) struct DirWatch {
    fd: AsyncFd<Watch>,
}

impl DirWatch {
    /// Watches `dir` (which must exist).
    pub(crate) fn new(dir: &Path) -> io::Result<Self> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        inotify.add_watch(dir, AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)?;
        // SAFETY: the AsyncFd owns the Inotify, so its fd stays open and the same until the
        // AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(Watch(inotify), Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self { fd })
    }

    /// Waits until an entry was created in the directory since the last call (returns at once
    /// when one was), and consumes the events.
    pub(crate) async fn changed(&self) -> io::Result<()> {
        loop {
            let mut ready = self.fd.readable().await?;
            match ready.get_inner().0.read_events() {
                Ok(events) if !events.is_empty() => return Ok(()),
                Ok(_) | Err(nix::errno::Errno::EAGAIN) => ready.clear_ready(),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_created_entry_wakes_the_watch_and_nothing_else_does() {
        let d = tempfile::tempdir().unwrap();
        let watch = DirWatch::new(d.path()).unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(50), watch.changed()).await;
        assert!(quiet.is_err(), "no entry yet, no wake-up");
        let path = d.path().join("agent.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        tokio::time::timeout(Duration::from_secs(10), watch.changed())
            .await
            .expect("the socket's creation wakes the watch")
            .unwrap();
        let again = tokio::time::timeout(Duration::from_millis(50), watch.changed()).await;
        assert!(again.is_err(), "the event was consumed");
        assert!(DirWatch::new(&d.path().join("missing")).is_err());
    }
}
