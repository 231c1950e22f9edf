//! `banger completions SHELL` and `banger man DIR`: shell completions and man pages generated
//! from the same clap definitions as `--help`, so they never drift.

use std::path::PathBuf;

use clap::CommandFactory;

use crate::{Cli, exit};

/// Flags of `banger completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell
    pub shell: clap_complete::Shell,
}

/// Flags of `banger man`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Directory to write the pages into (banger.1, banger-vm.1, ...)
    pub dir: PathBuf,
}

/// Prints the completion script for a shell on stdout.
pub fn completions(args: &CompletionsArgs) -> u8 {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "banger", &mut std::io::stdout());
    exit::OK
}

/// Writes a man page for `banger` and one per subcommand into `dir`.
pub fn man(args: &ManArgs) -> anyhow::Result<u8> {
    std::fs::create_dir_all(&args.dir)?;
    let cmd = Cli::command();
    clap_mangen::generate_to(cmd, &args.dir)?;
    println!("man pages written to {}", args.dir.display());
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn man_pages_cover_every_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        man(&ManArgs {
            dir: dir.path().into(),
        })
        .unwrap();
        for page in ["banger.1", "banger-up.1", "banger-vm.1", "banger-events.1"] {
            let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
            assert!(text.contains(".TH"), "{page} is not a man page");
        }
    }

    #[test]
    fn bash_completions_know_the_subcommands() {
        let mut buf = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut Cli::command(),
            "banger",
            &mut buf,
        );
        let text = String::from_utf8(buf).unwrap();
        for word in ["up", "down", "status", "doctor", "events", "vm"] {
            assert!(text.contains(word), "{word} missing from completions");
        }
    }
}
