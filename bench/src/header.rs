//! The lines above the table: what ran, on what, with which build.

use std::process::Command;

use crate::args::Settings;

/// The build profile this binary (and so, by `cargo build`'s layout, the `banger` beside it)
/// was built with.
pub(crate) fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// The header: the simulator warning, build profile, machine, settings.
pub(crate) fn text(settings: &Settings) -> String {
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let scale: Vec<String> = settings.scale.iter().map(ToString::to_string).collect();
    format!(
        "# banger-bench\n\n\
         - hypervisor: SIMULATOR (fcsim; no guest kernel boots, so start/stop exclude any boot)\n\
         - build profile: {}\n\
         - machine: {} ({cpus} CPUs), {}\n\
         - repetitions: {}, scale: {}\n\
         - every command runs through `ip netns exec` into the stack's namespace\n",
        profile(),
        command_line("uname", &["-srm"]),
        command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        settings.reps,
        scale.join(","),
    )
}

/// The first line `program args` prints, or `?`.
fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "?".to_owned())
}
