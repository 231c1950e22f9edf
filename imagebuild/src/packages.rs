//! The package lists of the images.

/// Added to debootstrap's `minbase` variant: an init (systemd), the SSH server, `ip`, TLS
/// roots, and what a root shell expects to find (`ps`, `less`). No DHCP client or ifupdown:
/// the kernel configures eth0 from the `ip=` boot argument and nothing may fight it.
pub const DEBIAN_BASE: &[&str] = &[
    "systemd-sysv",
    "openssh-server",
    "iproute2",
    "ca-certificates",
    "procps",
    "less",
];

/// `--dev-baseline` on Debian: the language-agnostic tools a development VM is expected to have
/// (compilers and language runtimes are left to `--packages`).
pub const DEV_BASELINE: &[&str] = &[
    "git",
    "curl",
    "ca-certificates",
    "build-essential",
    "pkg-config",
    "make",
    "unzip",
    "xz-utils",
    "zstd",
    "jq",
    "vim-tiny",
    "tmux",
    "rsync",
    "openssh-client",
    "iputils-ping",
    "dnsutils",
    "htop",
    "file",
];

/// `--dev-baseline` on Void: the same tools under Void's package names.
pub const VOID_DEV_BASELINE: &[&str] = &[
    "git",
    "curl",
    "ca-certificates",
    "base-devel",
    "pkg-config",
    "unzip",
    "xz",
    "zstd",
    "jq",
    "vim",
    "tmux",
    "rsync",
    "openssh",
    "iputils",
    "bind-utils",
    "htop",
    "file",
];
