//! The simulated guest's init: what the guest kernel's init would be, for a guest that
//! `banger-fcsim` (the Firecracker SIMULATOR) runs as processes on the host.
//!
//! The simulator starts it, as root, for each guest:
//!
//! ```text
//! banger-fcsim-init --guest-dir <dir> \
//!     --mount <source> <target> <type> <options> ... \
//!     --chroot <image mount point> --umask 022 -- /usr/local/bin/banger-agent --listen ...
//! ```
//!
//! ([`Plan`] writes and reads that command line.) It then:
//!
//! 1. leaves the host's PID and mount namespaces (`unshare(CLONE_NEWPID | CLONE_NEWNS)`, `/`
//!    made recursively private) and forks the guest's pid 1; this first process only waits
//!    for it and exits with its status, as `unshare --fork` does;
//! 2. pid 1 makes the mounts in order ([`mounts`]: image files through autoclear loop
//!    devices, `mkdir` of missing mount points), starts the command (chrooted, with the umask
//!    given) and waits for it. A mount that fails exits with [`MOUNT_FAILED_EXIT`], which the
//!    simulator reports as the kernel's "VFS: Unable to mount root fs" panic;
//! 3. pid 1 handles the signals a guest init gets from its VMM ([`init`]): SIGTERM goes on to
//!    the command (CtrlAltDel), SIGUSR1 and SIGUSR2 stop and continue every process of the
//!    guest (pause and resume), and SIGHUP, sent by the kernel when the first process died
//!    (its parent, the simulator, died), kills the guest, unmounts and removes the guest
//!    directory. When the command exits, pid 1 exits with its status (a signal N as 128 + N)
//!    and the kernel kills whatever else runs in the namespace.
//!
//! One small process replaces what was `unshare`, two shells, `mount -a` and `chroot` per
//! guest: on a 2-CPU host starting 100 guests at once, those programs' start-up (and
//! `mount`'s scan of every loop device for each image) was a fifth of all the CPU spent.

pub mod init;
pub mod mounts;
pub mod plan;
pub mod tidy;

pub use init::run;
pub use plan::{Mount, Plan, PlanError, USAGE};

/// The binary's name, which the simulator looks for beside itself.
pub const NAME: &str = "banger-fcsim-init";

/// The exit status when a mount fails (the simulator's "root fs could not be mounted").
pub const MOUNT_FAILED_EXIT: i32 = 97;

/// The exit status after the VMM went away (SIGHUP): killed, as a shell reports SIGKILL.
pub const VMM_GONE_EXIT: i32 = 128 + libc::SIGKILL;

/// The exit status when the command cannot be started (as a shell reports it).
pub const NOT_STARTED_EXIT: i32 = 127;
