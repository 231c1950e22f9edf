//! The `[stord]` table of the config file.
//!
//! ```toml
//! [stord]
//! backend = "auto"               # or "dm" (= "dm-snapshot"), "reflink", "sparse" (= "sparse-copy")
//! default_disk_mib = 8192        # work disk size when neither the request nor the image says
//! default_kernel_args = "console=ttyS0 reboot=k panic=1 pci=off"
//! ```

use banger_proto::MemMib;
use banger_proto::store::BackendKind;
use serde::Deserialize;

use crate::backend::BackendChoice;

/// Kernel command line of an image registered without one: serial console, reboot on
/// `reboot`, no PCI (Firecracker has none), panic straight to exit.
pub const DEFAULT_KERNEL_ARGS: &str = "console=ttyS0 reboot=k panic=1 pci=off";
/// Work disk size of an image registered without one: sparse, so it costs only what is used.
pub const DEFAULT_DISK_MIB: u32 = 8192;
/// Longest kernel command line accepted: Firecracker's (and x86's) limit.
pub const MAX_KERNEL_ARGS: usize = 2048;

/// `[stord]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StordFile {
    /// `auto` or a back-end name.
    pub backend: Option<String>,
    /// Default work disk size, MiB.
    pub default_disk_mib: Option<i64>,
    /// Default kernel command line.
    pub default_kernel_args: Option<String>,
}

/// `[stord]` resolved.
#[derive(Debug, Clone)]
pub struct StordConfig {
    /// Which back-end to use.
    pub backend: BackendChoice,
    /// Default work disk size.
    pub default_disk_mib: MemMib,
    /// Default kernel command line.
    pub default_kernel_args: String,
}

/// A bad `[stord]` value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unknown back-end.
    #[error("[stord] backend: {0}")]
    Backend(#[from] banger_proto::store::UnknownBackend),
    /// Bad size.
    #[error("[stord] default_disk_mib: {0}")]
    DiskSize(#[from] banger_proto::NameError),
    /// Bad kernel arguments.
    #[error("[stord] default_kernel_args: {0}")]
    KernelArgs(String),
}

/// Checks a kernel command line: printable, one line, within the length limit.
pub fn check_kernel_args(args: &str) -> Result<(), String> {
    if args.len() > MAX_KERNEL_ARGS {
        return Err(format!(
            "the kernel command line is {} bytes; the limit is {MAX_KERNEL_ARGS}",
            args.len()
        ));
    }
    if args.chars().any(char::is_control) {
        return Err("the kernel command line must be one line without control characters".into());
    }
    Ok(())
}

impl StordFile {
    /// Resolves defaults and checks values.
    pub fn resolve(self) -> Result<StordConfig, ConfigError> {
        let backend = match self.backend.as_deref() {
            None | Some("auto") => BackendChoice::Auto,
            // Short forms an operator is likely to type.
            Some("dm") => BackendChoice::Fixed(BackendKind::DmSnapshot),
            Some("sparse") => BackendChoice::Fixed(BackendKind::SparseCopy),
            Some(name) => BackendChoice::Fixed(name.parse::<BackendKind>()?),
        };
        let default_disk_mib =
            MemMib::new(self.default_disk_mib.unwrap_or(i64::from(DEFAULT_DISK_MIB)))?;
        let default_kernel_args = self
            .default_kernel_args
            .unwrap_or_else(|| DEFAULT_KERNEL_ARGS.to_owned());
        check_kernel_args(&default_kernel_args).map_err(ConfigError::KernelArgs)?;
        Ok(StordConfig {
            backend,
            default_disk_mib,
            default_kernel_args,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<StordConfig, String> {
        let f: StordFile = toml::from_str(s).map_err(|e| e.to_string())?;
        f.resolve().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_overrides() {
        let c = parse("").unwrap();
        assert_eq!(c.backend, BackendChoice::Auto);
        assert_eq!(c.default_disk_mib.get(), DEFAULT_DISK_MIB);
        assert_eq!(c.default_kernel_args, DEFAULT_KERNEL_ARGS);
        let c = parse("backend = 'reflink'\ndefault_disk_mib = 512").unwrap();
        assert_eq!(c.backend, BackendChoice::Fixed(BackendKind::Reflink));
        assert_eq!(c.default_disk_mib.get(), 512);
        let c = parse("backend = 'dm'").unwrap();
        assert_eq!(c.backend, BackendChoice::Fixed(BackendKind::DmSnapshot));
        let c = parse("backend = 'sparse'").unwrap();
        assert_eq!(c.backend, BackendChoice::Fixed(BackendKind::SparseCopy));
        let c = parse("backend = 'sparse-copy'").unwrap();
        assert_eq!(c.backend, BackendChoice::Fixed(BackendKind::SparseCopy));
    }

    #[test]
    fn bad_values_are_refused_at_start_up() {
        assert!(
            parse("backend = 'zfs'")
                .unwrap_err()
                .contains("unknown storage back-end")
        );
        assert!(
            parse("default_disk_mib = 0")
                .unwrap_err()
                .contains("greater than 0")
        );
        assert!(parse("default_kernel_args = \"a\\nb\"").is_err());
        assert!(parse("bakend = 'auto'").is_err());
    }
}
