//! The agent's settings: command-line flags over a TOML file over defaults.
//!
//! The file (`--config`, else `/etc/banger/agent.toml` when it exists) has these keys:
//!
//! ```toml
//! listen = "vsock:52"            # or "unix:/run/banger-agent.sock"
//! allow_exec = true              # banger images ship this; off when absent
//! max_request_bytes = 1048576    # larger request bodies get 413
//! exec_timeout_max_secs = 3600   # no exec runs longer than this
//! ```
//!
//! The agent replaced the earlier PING/PONG responder (`banger-vsock-pingd`, the "ping helper"),
//! and its config surface was renamed from ping helper to agent. The helper's only setting was
//! its vsock port, so two legacy spellings of that key are still accepted, with a deprecation
//! warning, and mapped to `listen = "vsock:<port>"`:
//!
//! | legacy key | meaning now |
//! | --- | --- |
//! | `ping_helper_port = N` | `listen = "vsock:N"` |
//! | `vsock_ping_port = N` | `listen = "vsock:N"` |
//!
//! When `listen` is also set it wins, and the legacy key is reported as ignored.

use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_proto::agent::{DEFAULT_AGENT_PORT, DEFAULT_MAX_REQUEST_BYTES};
use serde::Deserialize;

use crate::listen::{ListenAddr, ParseListenError};

/// Where the packaged services put the config; read when `--config` is not given and it exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/banger/agent.toml";

/// The longest any exec may run unless the config says otherwise: one hour, so a runaway
/// command in a long-lived VM is eventually reaped even when the caller asked for more.
pub const DEFAULT_EXEC_TIMEOUT_MAX_SECS: u64 = 3600;

/// The agent's command line.
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(
    name = "banger-agent",
    version,
    about = "The banger guest agent: health and exec over vsock"
)]
pub struct Args {
    /// Where to listen: `vsock:<PORT>` (in a guest; only the host, CID 2, is served) or
    /// `unix:<PATH>` (simulator, tests; socket mode 0600, only this process's uid is served).
    /// Default `vsock:52`.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<ListenAddr>,
    /// Run commands sent to `POST /v1/exec` (off unless this or `allow_exec = true`).
    #[arg(long)]
    pub allow_exec: bool,
    /// The TOML config file (default /etc/banger/agent.toml when it exists).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Largest accepted request body, bytes.
    #[arg(long, value_name = "BYTES")]
    pub max_request_bytes: Option<u64>,
    /// Longest any exec may run, seconds.
    #[arg(long, value_name = "SECS")]
    pub exec_timeout_max_secs: Option<u64>,
}

/// The config file as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `vsock:<PORT>` or `unix:<PATH>`.
    pub listen: Option<String>,
    /// Run commands sent to `POST /v1/exec`.
    pub allow_exec: Option<bool>,
    /// Largest accepted request body, bytes.
    pub max_request_bytes: Option<u64>,
    /// Longest any exec may run, seconds.
    pub exec_timeout_max_secs: Option<u64>,
    /// Deprecated: the ping helper's vsock port; means `listen = "vsock:<port>"`.
    pub ping_helper_port: Option<u32>,
    /// Deprecated: the ping helper's vsock port; means `listen = "vsock:<port>"`.
    pub vsock_ping_port: Option<u32>,
}

/// The settings the agent runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where to listen.
    pub listen: ListenAddr,
    /// Whether exec is enabled.
    pub allow_exec: bool,
    /// Largest accepted request body, bytes.
    pub max_request_bytes: u64,
    /// Longest any exec may run.
    pub exec_timeout_max: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: ListenAddr::Vsock {
                port: DEFAULT_AGENT_PORT,
            },
            allow_exec: false,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            exec_timeout_max: Duration::from_secs(DEFAULT_EXEC_TIMEOUT_MAX_SECS),
        }
    }
}

/// Loading the settings failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("reading config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML for the agent.
    #[error("parsing config file {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: toml::de::Error,
    },
    /// `listen` in the file is not a listen address.
    #[error("config key listen")]
    Listen(#[source] ParseListenError),
    /// The two legacy port keys disagree.
    #[error(
        "legacy keys ping_helper_port ({a}) and vsock_ping_port ({b}) disagree; set listen instead"
    )]
    LegacyConflict {
        /// `ping_helper_port`.
        a: u32,
        /// `vsock_ping_port`.
        b: u32,
    },
    /// A limit is zero.
    #[error("{key} must be greater than zero")]
    Zero {
        /// The key.
        key: &'static str,
    },
}

/// A deprecation or override the caller should log once the logger is up.
pub type Warnings = Vec<String>;

impl Config {
    /// Merges `args` over the config file (the one named, else the default path when it exists)
    /// over defaults. Returns the settings and the deprecation warnings to log.
    pub fn load(args: &Args) -> Result<(Self, Warnings), ConfigError> {
        let file = match &args.config {
            Some(path) => Some(read_file(path)?),
            None => {
                let path = Path::new(DEFAULT_CONFIG_PATH);
                if path.exists() {
                    Some(read_file(path)?)
                } else {
                    None
                }
            }
        };
        Self::merge(args, file.unwrap_or_default())
    }

    /// Merges `args` over `file` over defaults.
    pub fn merge(args: &Args, file: FileConfig) -> Result<(Self, Warnings), ConfigError> {
        let mut warnings = Warnings::new();
        let mut cfg = Self::default();

        let legacy = legacy_port(&file, &mut warnings)?;
        match (&file.listen, legacy) {
            (Some(listen), legacy) => {
                cfg.listen = listen.parse().map_err(ConfigError::Listen)?;
                if legacy.is_some() {
                    warnings.push(
                        "both listen and a legacy ping helper port key are set; listen wins"
                            .to_owned(),
                    );
                }
            }
            (None, Some(port)) => cfg.listen = ListenAddr::Vsock { port },
            (None, None) => {}
        }
        if let Some(v) = file.allow_exec {
            cfg.allow_exec = v;
        }
        if let Some(v) = file.max_request_bytes {
            cfg.max_request_bytes = v;
        }
        if let Some(v) = file.exec_timeout_max_secs {
            cfg.exec_timeout_max = Duration::from_secs(v);
        }

        if let Some(listen) = &args.listen {
            cfg.listen = listen.clone();
        }
        cfg.allow_exec |= args.allow_exec;
        if let Some(v) = args.max_request_bytes {
            cfg.max_request_bytes = v;
        }
        if let Some(v) = args.exec_timeout_max_secs {
            cfg.exec_timeout_max = Duration::from_secs(v);
        }

        if cfg.max_request_bytes == 0 {
            return Err(ConfigError::Zero {
                key: "max_request_bytes",
            });
        }
        if cfg.exec_timeout_max.is_zero() {
            return Err(ConfigError::Zero {
                key: "exec_timeout_max_secs",
            });
        }
        Ok((cfg, warnings))
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// The port named by the legacy ping helper keys, with a deprecation warning for each used.
fn legacy_port(file: &FileConfig, warnings: &mut Warnings) -> Result<Option<u32>, ConfigError> {
    for (key, value) in [
        ("ping_helper_port", file.ping_helper_port),
        ("vsock_ping_port", file.vsock_ping_port),
    ] {
        if let Some(port) = value {
            warnings.push(format!(
                "config key {key} is deprecated (the ping helper is now the agent); \
                 use listen = \"vsock:{port}\""
            ));
        }
    }
    match (file.ping_helper_port, file.vsock_ping_port) {
        (Some(a), Some(b)) if a != b => Err(ConfigError::LegacyConflict { a, b }),
        (a, b) => Ok(a.or(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_listen_on_vsock_52_with_exec_off() {
        let (cfg, warnings) = Config::merge(&Args::default(), FileConfig::default()).unwrap();
        assert_eq!(cfg, Config::default());
        assert_eq!(cfg.listen.to_string(), "vsock:52");
        assert!(!cfg.allow_exec);
        assert_eq!(cfg.max_request_bytes, 1024 * 1024);
        assert!(warnings.is_empty());
    }

    #[test]
    fn file_keys_apply_and_flags_override_them() {
        let f = file(
            "listen = \"unix:/tmp/a.sock\"\nallow_exec = true\nmax_request_bytes = 10\n\
             exec_timeout_max_secs = 5\n",
        );
        let (cfg, _) = Config::merge(&Args::default(), f.clone()).unwrap();
        assert_eq!(cfg.listen.to_string(), "unix:/tmp/a.sock");
        assert!(cfg.allow_exec);
        assert_eq!(cfg.max_request_bytes, 10);
        assert_eq!(cfg.exec_timeout_max, Duration::from_secs(5));

        let args = Args {
            listen: Some("vsock:1024".parse().unwrap()),
            max_request_bytes: Some(20),
            ..Args::default()
        };
        let (cfg, _) = Config::merge(&args, f).unwrap();
        assert_eq!(cfg.listen, ListenAddr::Vsock { port: 1024 });
        assert_eq!(cfg.max_request_bytes, 20);
    }

    #[test]
    fn legacy_ping_helper_keys_map_to_a_vsock_listen_address_with_a_warning() {
        for key in ["ping_helper_port", "vsock_ping_port"] {
            let (cfg, warnings) =
                Config::merge(&Args::default(), file(&format!("{key} = 1234"))).unwrap();
            assert_eq!(cfg.listen, ListenAddr::Vsock { port: 1234 });
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            assert!(warnings[0].contains(key) && warnings[0].contains("deprecated"));
        }
    }

    #[test]
    fn listen_wins_over_a_legacy_key() {
        let (cfg, warnings) = Config::merge(
            &Args::default(),
            file("listen = \"vsock:60\"\nping_helper_port = 61"),
        )
        .unwrap();
        assert_eq!(cfg.listen, ListenAddr::Vsock { port: 60 });
        assert!(warnings.iter().any(|w| w.contains("listen wins")));
    }

    #[test]
    fn conflicting_legacy_keys_are_rejected() {
        let err = Config::merge(
            &Args::default(),
            file("ping_helper_port = 1\nvsock_ping_port = 2"),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::LegacyConflict { a: 1, b: 2 }));
    }

    #[test]
    fn unknown_keys_and_zero_limits_are_rejected() {
        assert!(toml::from_str::<FileConfig>("allow_shell = true").is_err());
        let err = Config::merge(&Args::default(), file("max_request_bytes = 0")).unwrap_err();
        assert!(matches!(err, ConfigError::Zero { .. }));
    }
}
