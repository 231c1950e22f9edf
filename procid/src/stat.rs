//! `/proc/<pid>/stat`: the fields banger needs.

/// The fields of `/proc/<pid>/stat` banger reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// The state letter (`R`, `S`, `D`, `T`, `Z`, ...).
    pub state: char,
    /// The parent's pid.
    pub ppid: i32,
    /// The process group.
    pub pgrp: i32,
    /// When the process started, in clock ticks since boot (field 22).
    pub start_time: u64,
}

impl Stat {
    /// Whether the process has exited (a zombie waiting to be reaped, or being torn down).
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }

    /// Parses the text of `/proc/<pid>/stat`.
    pub fn parse(text: &str) -> Option<Self> {
        // The command name (field 2) is in parentheses and may hold spaces and parentheses
        // itself: the fields that follow start after the *last* ')'.
        let rest = &text[text.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // f[0] is field 3 (state), so field N is f[N - 3].
        Some(Self {
            state: f.first()?.chars().next()?,
            ppid: f.get(1)?.parse().ok()?,
            pgrp: f.get(2)?.parse().ok()?,
            start_time: f.get(19)?.parse().ok()?,
        })
    }
}

/// The stat of process `pid`, or `None` when there is none.
pub fn stat(pid: i32) -> Option<Stat> {
    if pid <= 0 {
        return None;
    }
    Stat::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let text = "4242 (a b) c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 200 18446744073709551615\n";
        let s = Stat::parse(text).unwrap();
        assert_eq!(
            s,
            Stat {
                state: 'S',
                ppid: 1,
                pgrp: 4242,
                start_time: 987_654
            }
        );
        assert!(!s.is_zombie());
        assert!(Stat::parse("4242 (x) Z 1 2").is_none(), "truncated");
        assert!(Stat::parse("garbage").is_none());
    }

    #[test]
    fn this_process_has_a_stat() {
        let me = i32::try_from(std::process::id()).unwrap();
        let s = stat(me).unwrap();
        assert!(!s.is_zombie());
        assert!(s.start_time > 0 || s.ppid >= 0);
        assert!(stat(0).is_none());
        assert!(stat(-1).is_none());
    }
}
