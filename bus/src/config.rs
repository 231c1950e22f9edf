//! Configuration shared by every banger process.
//!
//! Each value comes from, in order of precedence: a command-line flag, an environment variable
//! (`BANGER_*`), the TOML config file, and finally the built-in default. The config file is
//! `--config` when given; for the `banger` CLI only, then the user's own file,
//! `$XDG_CONFIG_HOME/banger/config.toml` (default `~/.config/banger/config.toml`: a NATS
//! context like `nats context`, URLs and credentials of a lab); then `/etc/banger/banger.toml`
//! when it exists, else the stack file that `banger up` writes (`<state_dir>/stack.toml`,
//! readable by root only: it holds the local bus credentials) when it exists. The file has top-level keys for what every service
//! shares and one table per service:
//!
//! ```toml
//! host_id = "lab1"              # default: the hostname
//! prefix = "banger"             # subject prefix
//! state_dir = "/var/lib/banger" # persistent data, one subdirectory per service
//! runtime_dir = "/run/banger"   # sockets and pid files
//!
//! [nats]
//! urls = ["nats://127.0.0.1:4222"]
//! user = "banger"
//! password = "..."
//! # token, nkey_seed_file, creds_file, tls_ca, tls_cert, tls_key, require_tls, require_auth
//! # inbox_prefix = "_INBOX_netd"   # where replies to this process arrive (per-role permissions)
//!
//! [netd]
//! bridge = "banger0"
//! ```

use std::path::{Path, PathBuf};

use banger_proto::{HostId, Subjects};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::BusError;

/// The config file read when `--config` is not given and the file exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/banger/banger.toml";
/// The file `banger up` writes under the state dir: the local stack's bus credentials, VMM
/// choice and which processes it manages.
pub const STACK_FILE: &str = "stack.toml";

/// The process name the `banger` CLI resolves its config as; only it reads the user's file.
pub const CLI_PROCESS: &str = "banger-cli";

/// The CLI user's config file: `$XDG_CONFIG_HOME/banger/config.toml`, else
/// `$HOME/.config/banger/config.toml`.
pub fn user_config_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("banger").join("config.toml"))
}

/// Default NATS URL: a local nats-server on its standard port.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// Default persistent state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/banger";
/// Default runtime directory (sockets, pids); cleared on reboot.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/banger";

/// Flags every banger binary accepts. Flatten into the binary's clap parser.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Bus and host options")]
pub struct CommonArgs {
    /// TOML config file [default: /etc/banger/banger.toml if it exists]
    #[arg(long, env = "BANGER_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// NATS server URL(s), comma-separated [default: nats://127.0.0.1:4222]
    #[arg(
        long = "nats-url",
        env = "BANGER_NATS_URL",
        value_delimiter = ',',
        global = true
    )]
    pub nats_urls: Vec<String>,

    /// NATS user (with --nats-password)
    #[arg(long, env = "BANGER_NATS_USER", global = true)]
    pub nats_user: Option<String>,

    /// NATS password
    #[arg(
        long,
        env = "BANGER_NATS_PASSWORD",
        global = true,
        hide_env_values = true
    )]
    pub nats_password: Option<String>,

    /// NATS token
    #[arg(long, env = "BANGER_NATS_TOKEN", global = true, hide_env_values = true)]
    pub nats_token: Option<String>,

    /// File holding an NKey seed for NATS authentication
    #[arg(long, env = "BANGER_NATS_NKEY", global = true)]
    pub nats_nkey: Option<PathBuf>,

    /// NATS credentials file (JWT + NKey, as `nsc` writes them)
    #[arg(long, env = "BANGER_NATS_CREDS", global = true)]
    pub nats_creds: Option<PathBuf>,

    /// CA certificate to verify the NATS server's TLS certificate
    #[arg(long, env = "BANGER_NATS_TLS_CA", global = true)]
    pub nats_tls_ca: Option<PathBuf>,

    /// Client certificate for NATS mutual TLS (with --nats-tls-key)
    #[arg(long, env = "BANGER_NATS_TLS_CERT", global = true)]
    pub nats_tls_cert: Option<PathBuf>,

    /// Client key for NATS mutual TLS
    #[arg(long, env = "BANGER_NATS_TLS_KEY", global = true)]
    pub nats_tls_key: Option<PathBuf>,

    /// Refuse to run unless credentials are given and the NATS server demands them (its INFO
    /// says auth_required): for a shared lab [default: [nats] require_auth]
    #[arg(long, env = "BANGER_NATS_REQUIRE_AUTH", global = true)]
    pub nats_require_auth: bool,

    /// Subject prefix of this process's reply inboxes, e.g. _INBOX_netd, so a lab's permissions
    /// can let each role read only its own replies [default: [nats] inbox_prefix, else _INBOX]
    #[arg(long, env = "BANGER_NATS_INBOX_PREFIX", global = true)]
    pub nats_inbox_prefix: Option<String>,

    /// Subject prefix shared by every service of one installation [default: banger]
    #[arg(long, env = "BANGER_PREFIX", global = true)]
    pub prefix: Option<String>,

    /// This host's id in subjects and DNS names [default: the hostname]
    #[arg(long, env = "BANGER_HOST_ID", global = true)]
    pub host_id: Option<String>,

    /// Persistent state directory [default: /var/lib/banger]
    #[arg(long, env = "BANGER_STATE_DIR", global = true)]
    pub state_dir: Option<PathBuf>,

    /// Runtime directory for sockets and pid files [default: /run/banger]
    #[arg(long, env = "BANGER_RUNTIME_DIR", global = true)]
    pub runtime_dir: Option<PathBuf>,

    /// Log format: human or json (level from RUST_LOG, default info)
    #[arg(
        long,
        env = "BANGER_LOG_FORMAT",
        default_value = "human",
        global = true
    )]
    pub log_format: crate::telemetry::LogFormat,
}

/// The `[nats]` table of the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsFile {
    /// Server URLs.
    #[serde(default)]
    pub urls: Vec<String>,
    /// User.
    pub user: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Token.
    pub token: Option<String>,
    /// NKey seed file.
    pub nkey_seed_file: Option<PathBuf>,
    /// Credentials file.
    pub creds_file: Option<PathBuf>,
    /// TLS CA file.
    pub tls_ca: Option<PathBuf>,
    /// TLS client certificate.
    pub tls_cert: Option<PathBuf>,
    /// TLS client key.
    pub tls_key: Option<PathBuf>,
    /// Refuse to connect without TLS.
    #[serde(default)]
    pub require_tls: bool,
    /// Refuse to start without credentials, or against a server that does not demand them
    /// (a shared lab).
    #[serde(default)]
    pub require_auth: bool,
    /// Prefix of reply inboxes (`_INBOX_<role>`).
    pub inbox_prefix: Option<String>,
}

/// The shared (top-level) part of the config file.
#[derive(Debug, Clone, Default, Deserialize)]
struct SharedFile {
    host_id: Option<String>,
    prefix: Option<String>,
    state_dir: Option<PathBuf>,
    runtime_dir: Option<PathBuf>,
    #[serde(default)]
    nats: NatsFile,
}

/// How to authenticate to NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsAuth {
    /// No credentials.
    None,
    /// User and password.
    UserPassword {
        /// User.
        user: String,
        /// Password.
        password: String,
    },
    /// A token.
    Token(String),
    /// An NKey seed file.
    NkeyFile(PathBuf),
    /// A credentials file.
    CredsFile(PathBuf),
}

/// Resolved NATS connection options.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Server URLs, tried in the order given (this host's node first), then those the cluster
    /// tells of.
    pub urls: Vec<String>,
    /// Authentication.
    pub auth: NatsAuth,
    /// TLS CA.
    pub tls_ca: Option<PathBuf>,
    /// TLS client certificate and key.
    pub tls_client: Option<(PathBuf, PathBuf)>,
    /// Require TLS.
    pub require_tls: bool,
    /// Refuse to connect without credentials, or to a server that does not require them.
    pub require_auth: bool,
    /// Prefix of reply inboxes; `None`: async-nats's `_INBOX`.
    pub inbox_prefix: Option<String>,
    /// Connection name shown by `nats server report connections`.
    pub name: String,
}

impl NatsOptions {
    /// Options for an unauthenticated local server at `url` (tests, tools).
    pub fn plain(url: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            urls: vec![url.into()],
            auth: NatsAuth::None,
            tls_ca: None,
            tls_client: None,
            require_tls: false,
            require_auth: false,
            inbox_prefix: None,
            name: name.into(),
        }
    }
}

/// Everything shared, resolved from flags, environment, file and defaults.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    /// NATS connection.
    pub nats: NatsOptions,
    /// Subjects under the configured prefix.
    pub subjects: Subjects,
    /// This host.
    pub host: HostId,
    /// Persistent state directory.
    pub state_dir: PathBuf,
    /// Runtime directory.
    pub runtime_dir: PathBuf,
    /// The parsed config file (empty when there is none), for per-service tables.
    file: toml::Table,
    /// Where it came from.
    pub file_path: Option<PathBuf>,
}

impl CommonConfig {
    /// Resolves the shared configuration of process `name` from its flags.
    pub fn resolve(args: &CommonArgs, name: &str) -> Result<Self, BusError> {
        let stack_file = args
            .state_dir
            .clone()
            .unwrap_or_else(|| DEFAULT_STATE_DIR.into())
            .join(STACK_FILE);
        let file_path = match &args.config {
            Some(p) => Some(p.clone()),
            None if name == CLI_PROCESS && user_config_file().is_some_and(|p| p.exists()) => {
                user_config_file()
            }
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => Some(DEFAULT_CONFIG_FILE.into()),
            None if stack_file.exists() => Some(stack_file),
            None => None,
        };
        let file: toml::Table = match &file_path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    BusError::Config(format!("reading config file {}: {e}", p.display()))
                })?;
                text.parse().map_err(|e| {
                    BusError::Config(format!("parsing config file {}: {e}", p.display()))
                })?
            }
            None => toml::Table::new(),
        };
        Self::resolve_with_file(args, name, file, file_path)
    }

    fn resolve_with_file(
        args: &CommonArgs,
        name: &str,
        file: toml::Table,
        file_path: Option<PathBuf>,
    ) -> Result<Self, BusError> {
        // Only the shared keys are read here; service tables are read by `section`.
        let mut shared_table = file.clone();
        shared_table.retain(|k, _| {
            matches!(
                k,
                "host_id" | "prefix" | "state_dir" | "runtime_dir" | "nats"
            )
        });
        let shared: SharedFile = shared_table
            .try_into()
            .map_err(|e| BusError::Config(format!("config file: {e}")))?;

        let urls = if !args.nats_urls.is_empty() {
            args.nats_urls.clone()
        } else if !shared.nats.urls.is_empty() {
            shared.nats.urls.clone()
        } else {
            vec![DEFAULT_NATS_URL.to_owned()]
        };

        let user = args.nats_user.clone().or(shared.nats.user.clone());
        let password = args.nats_password.clone().or(shared.nats.password.clone());
        let token = args.nats_token.clone().or(shared.nats.token.clone());
        let nkey = args
            .nats_nkey
            .clone()
            .or(shared.nats.nkey_seed_file.clone());
        let creds = args.nats_creds.clone().or(shared.nats.creds_file.clone());
        let auth = match (user, password, token, nkey, creds) {
            (None, None, None, None, None) => NatsAuth::None,
            (Some(user), Some(password), None, None, None) => {
                NatsAuth::UserPassword { user, password }
            }
            (None, None, Some(t), None, None) => NatsAuth::Token(t),
            (None, None, None, Some(k), None) => NatsAuth::NkeyFile(k),
            (None, None, None, None, Some(c)) => NatsAuth::CredsFile(c),
            (Some(_), None, ..) | (None, Some(_), ..) => {
                return Err(BusError::Config(
                    "NATS user and password must be given together".into(),
                ));
            }
            _ => {
                return Err(BusError::Config(
                    "give only one of: NATS user/password, token, nkey, creds file".into(),
                ));
            }
        };
        let tls_cert = args.nats_tls_cert.clone().or(shared.nats.tls_cert.clone());
        let tls_key = args.nats_tls_key.clone().or(shared.nats.tls_key.clone());
        let tls_client = match (tls_cert, tls_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(BusError::Config(
                    "a TLS client certificate and key must be given together".into(),
                ));
            }
        };
        let nats = NatsOptions {
            urls,
            auth,
            tls_ca: args.nats_tls_ca.clone().or(shared.nats.tls_ca.clone()),
            tls_client,
            require_tls: shared.nats.require_tls,
            require_auth: args.nats_require_auth || shared.nats.require_auth,
            inbox_prefix: check_inbox_prefix(
                args.nats_inbox_prefix
                    .clone()
                    .or(shared.nats.inbox_prefix.clone()),
            )?,
            name: name.to_owned(),
        };

        let prefix = args
            .prefix
            .clone()
            .or(shared.prefix)
            .unwrap_or_else(|| banger_proto::subject::DEFAULT_PREFIX.to_owned());
        let subjects = Subjects::new(prefix).map_err(|e| BusError::Config(e.to_string()))?;

        let host = match args.host_id.clone().or(shared.host_id) {
            Some(h) => HostId::new(h).map_err(|e| BusError::Config(e.to_string()))?,
            None => default_host_id()?,
        };
        Ok(Self {
            nats,
            subjects,
            host,
            state_dir: args
                .state_dir
                .clone()
                .or(shared.state_dir)
                .unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
            runtime_dir: args
                .runtime_dir
                .clone()
                .or(shared.runtime_dir)
                .unwrap_or_else(|| DEFAULT_RUNTIME_DIR.into()),
            file,
            file_path,
        })
    }

    /// Reads the service table `[name]` of the config file into `T` (its defaults when the
    /// table is absent). Unknown keys are an error, so a typo is caught at start-up.
    pub fn section<T: DeserializeOwned + Default>(&self, name: &str) -> Result<T, BusError> {
        match self.file.get(name) {
            None => Ok(T::default()),
            Some(v) => v
                .clone()
                .try_into()
                .map_err(|e| BusError::Config(format!("config file table [{name}]: {e}"))),
        }
    }

    /// The raw config file, for tools that read tables of their own (`banger up`'s `[stack]`).
    pub fn file_table(&self) -> &toml::Table {
        &self.file
    }

    /// The service's own state directory: `<state_dir>/<service>`.
    pub fn service_state_dir(&self, service: &str) -> PathBuf {
        self.state_dir.join(service)
    }
}

/// A reply-inbox prefix must be a plain subject prefix: tokens of printable characters without
/// wildcards, not ending in a dot (the client appends `.<unique id>`).
fn check_inbox_prefix(prefix: Option<String>) -> Result<Option<String>, BusError> {
    let Some(p) = prefix else {
        return Ok(None);
    };
    let ok = !p.is_empty()
        && p.split('.').all(|t| {
            !t.is_empty() && t != "*" && t != ">" && t.bytes().all(|b| b.is_ascii_graphic())
        });
    if ok {
        Ok(Some(p))
    } else {
        Err(BusError::Config(format!(
            "NATS inbox prefix {p:?} is not a subject prefix such as _INBOX_netd (no spaces, \
             wildcards or empty tokens)"
        )))
    }
}

/// The hostname, lowercased and made DNS-label safe, as the default host id.
pub fn default_host_id() -> Result<HostId, BusError> {
    let raw = nix::unistd::gethostname()
        .map_err(|e| BusError::Config(format!("reading the hostname: {e}")))?;
    let raw = raw.to_string_lossy().to_lowercase();
    // Keep the first label only ("lab1.example.com" -> "lab1") and replace anything a DNS
    // label cannot hold.
    let first = raw.split('.').next().unwrap_or_default();
    let cleaned: String = first
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let cleaned = cleaned.trim_matches('-');
    let cleaned = if cleaned.is_empty() {
        "localhost"
    } else {
        cleaned
    };
    let cleaned: String = cleaned.chars().take(HostId::MAX_LEN).collect();
    HostId::new(cleaned.trim_end_matches('-'))
        .map_err(|e| BusError::Config(format!("hostname is not usable as a host id: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(args: &CommonArgs, file: &str) -> Result<CommonConfig, BusError> {
        CommonConfig::resolve_with_file(args, "test", file.parse().unwrap(), None)
    }

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let c = resolve(&CommonArgs::default(), "").unwrap();
        assert_eq!(c.nats.urls, vec![DEFAULT_NATS_URL]);
        assert_eq!(c.nats.auth, NatsAuth::None);
        assert_eq!(c.subjects.prefix(), "banger");
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(c.runtime_dir, PathBuf::from(DEFAULT_RUNTIME_DIR));
        assert!(!c.host.as_str().is_empty());
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let file = r#"
            host_id = "from-file"
            prefix = "filep"
            state_dir = "/srv/banger"
            [nats]
            urls = ["nats://10.0.0.1:4222"]
            user = "u"
            password = "p"
        "#;
        let c = resolve(&CommonArgs::default(), file).unwrap();
        assert_eq!(c.host.as_str(), "from-file");
        assert_eq!(c.subjects.prefix(), "filep");
        assert_eq!(c.nats.urls, vec!["nats://10.0.0.1:4222"]);
        assert_eq!(
            c.nats.auth,
            NatsAuth::UserPassword {
                user: "u".into(),
                password: "p".into()
            }
        );
        assert_eq!(c.state_dir, PathBuf::from("/srv/banger"));

        let args = CommonArgs {
            host_id: Some("from-flag".into()),
            nats_urls: vec!["nats://a:1".into(), "nats://b:2".into()],
            ..Default::default()
        };
        let c = resolve(&args, file).unwrap();
        assert_eq!(c.host.as_str(), "from-flag");
        assert_eq!(c.nats.urls.len(), 2);
    }

    #[test]
    fn conflicting_or_bad_values_are_rejected() {
        let args = CommonArgs {
            nats_user: Some("u".into()),
            ..Default::default()
        };
        assert!(
            resolve(&args, "")
                .unwrap_err()
                .to_string()
                .contains("together")
        );
        let args = CommonArgs {
            nats_token: Some("t".into()),
            nats_creds: Some("/x".into()),
            ..Default::default()
        };
        assert!(
            resolve(&args, "")
                .unwrap_err()
                .to_string()
                .contains("only one")
        );
        let args = CommonArgs {
            host_id: Some("Bad Host".into()),
            ..Default::default()
        };
        assert!(resolve(&args, "").is_err());
        assert!(resolve(&CommonArgs::default(), "[nats]\nurl = 'x'").is_err());
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Svc {
        bridge: Option<String>,
    }

    #[test]
    fn the_inbox_prefix_and_require_auth_come_from_flag_or_file() {
        let c = resolve(&CommonArgs::default(), "").unwrap();
        assert_eq!(c.nats.inbox_prefix, None);
        assert!(!c.nats.require_auth);
        let file = "[nats]\ninbox_prefix = '_INBOX_netd'\nrequire_auth = true";
        let c = resolve(&CommonArgs::default(), file).unwrap();
        assert_eq!(c.nats.inbox_prefix.as_deref(), Some("_INBOX_netd"));
        assert!(c.nats.require_auth);
        let args = CommonArgs {
            nats_inbox_prefix: Some("_INBOX_cli".into()),
            nats_require_auth: true,
            ..CommonArgs::default()
        };
        let c = resolve(&args, "").unwrap();
        assert_eq!(c.nats.inbox_prefix.as_deref(), Some("_INBOX_cli"));
        assert!(c.nats.require_auth);
        for bad in ["", "_INBOX.", "_INBOX.>", "a b", "x.*.y"] {
            let args = CommonArgs {
                nats_inbox_prefix: Some(bad.into()),
                ..CommonArgs::default()
            };
            let e = resolve(&args, "").unwrap_err().to_string();
            assert!(e.contains("inbox prefix"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn service_sections_are_read_strictly() {
        let c = resolve(&CommonArgs::default(), "[netd]\nbridge = 'br9'").unwrap();
        assert_eq!(
            c.section::<Svc>("netd").unwrap().bridge.as_deref(),
            Some("br9")
        );
        assert_eq!(c.section::<Svc>("stord").unwrap(), Svc::default());
        let c = resolve(&CommonArgs::default(), "[netd]\nbrige = 'typo'").unwrap();
        assert!(
            c.section::<Svc>("netd")
                .unwrap_err()
                .to_string()
                .contains("[netd]")
        );
    }
}
