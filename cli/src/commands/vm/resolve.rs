//! Turning the VM references a user typed into VMs, from one `vm.list` snapshot.
//!
//! A reference is a VM name, a full id, or a unique prefix of an id. Batch commands resolve
//! every reference against the same snapshot, drop repeats (the same reference twice, or two
//! references to one VM), and keep the order the user typed, so `banger vm stop a a b missing`
//! acts on `a` and `b` once each and reports `missing` in its place. A reference that matches
//! nothing or more than one VM becomes a failed target; the others still run.

use std::collections::HashSet;
use std::fmt;

use banger_proto::vm::VmInfo;
use banger_proto::{ApiError, ErrorCode};

/// Why a reference did not resolve to exactly one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ResolveError {
    /// No VM has this name, id or id prefix.
    NotFound {
        /// What the user typed.
        reference: String,
        /// Hosts that did not answer `vm.list`: the VM may live there.
        unreachable: Vec<String>,
    },
    /// Several VMs match.
    Ambiguous {
        /// What the user typed.
        reference: String,
        /// `name (id) on host` of each match.
        candidates: Vec<String>,
    },
}

impl ResolveError {
    /// The stable error code: `not_found` or `ambiguous`.
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound { .. } => ErrorCode::NotFound,
            Self::Ambiguous { .. } => ErrorCode::Ambiguous,
        }
    }

    /// As the bus error object, so the CLI's exit-code mapping applies.
    pub(crate) fn to_api(&self) -> ApiError {
        ApiError::new(self.code(), self.to_string())
    }
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound {
                reference,
                unreachable,
            } => {
                write!(
                    f,
                    "no VM is named {reference:?} or has an id starting with it"
                )?;
                if !unreachable.is_empty() {
                    write!(
                        f,
                        " (host {} did not answer; the VM may be there)",
                        unreachable.join(", ")
                    )?;
                }
                Ok(())
            }
            Self::Ambiguous {
                reference,
                candidates,
            } => write!(
                f,
                "{reference:?} matches {} VMs: {}; use the name or more of the id",
                candidates.len(),
                candidates.join(", ")
            ),
        }
    }
}

impl std::error::Error for ResolveError {}

/// One target of a command, in the order first typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The reference as typed (the first one, when several name the same VM).
    pub(crate) reference: String,
    /// The VM, or why there is none.
    pub(crate) vm: Result<VmInfo, ResolveError>,
}

/// Resolves one reference against `vms`.
///
/// An exact name wins, then an exact id, then a unique id prefix. Two VMs with the same name
/// on different hosts are ambiguous (use the id).
pub(crate) fn resolve_one(
    reference: &str,
    vms: &[VmInfo],
    unreachable: &[String],
) -> Result<VmInfo, ResolveError> {
    let candidates = |matches: &[&VmInfo]| {
        matches
            .iter()
            .map(|v| format!("{} ({}) on {}", v.name, v.id.short(), v.host))
            .collect()
    };
    let by_name: Vec<&VmInfo> = vms
        .iter()
        .filter(|v| v.name.as_str() == reference)
        .collect();
    match by_name.as_slice() {
        [one] => return Ok((*one).clone()),
        [] => {}
        many => {
            return Err(ResolveError::Ambiguous {
                reference: reference.to_owned(),
                candidates: candidates(many),
            });
        }
    }
    if let Some(v) = vms.iter().find(|v| v.id.as_str() == reference) {
        return Ok(v.clone());
    }
    let by_prefix: Vec<&VmInfo> = if reference.is_empty() {
        Vec::new()
    } else {
        vms.iter()
            .filter(|v| v.id.as_str().starts_with(reference))
            .collect()
    };
    match by_prefix.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ResolveError::NotFound {
            reference: reference.to_owned(),
            unreachable: unreachable.to_vec(),
        }),
        many => Err(ResolveError::Ambiguous {
            reference: reference.to_owned(),
            candidates: candidates(many),
        }),
    }
}

/// Resolves every reference against one snapshot: repeats removed, first-seen order kept.
pub(crate) fn resolve_all(
    references: &[String],
    vms: &[VmInfo],
    unreachable: &[String],
) -> Vec<Target> {
    let mut seen_refs: HashSet<&str> = HashSet::new();
    let mut seen_vms = HashSet::new();
    let mut out = Vec::new();
    for reference in references {
        if !seen_refs.insert(reference.as_str()) {
            continue;
        }
        let vm = resolve_one(reference, vms, unreachable);
        if let Ok(v) = &vm
            && !seen_vms.insert(v.id.clone())
        {
            continue;
        }
        out.push(Target {
            reference: reference.clone(),
            vm,
        });
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A VM for tests.
    pub(crate) fn vm(name: &str, id: &str, host: &str) -> VmInfo {
        banger_proto::testing::vm_info(name, id, host)
    }

    fn fleet() -> Vec<VmInfo> {
        vec![
            vm("a", "aaaa1111000000000000000000000000", "h1"),
            vm("b", "bbbb0000000000000000000000000000", "h2"),
            vm("c", "aaaa2222000000000000000000000000", "h1"),
            vm("twin", "cccc0000000000000000000000000000", "h1"),
            vm("twin", "dddd0000000000000000000000000000", "h2"),
            // A VM whose name looks like another VM's id prefix.
            vm("bbbb", "eeee0000000000000000000000000000", "h2"),
        ]
    }

    fn refs(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| (*s).to_owned()).collect()
    }

    fn names(targets: &[Target]) -> Vec<String> {
        targets
            .iter()
            .map(|t| match &t.vm {
                Ok(v) => format!("{}={}", t.reference, v.name),
                Err(e) => format!("{}!{}", t.reference, e.code()),
            })
            .collect()
    }

    #[test]
    fn repeats_are_dropped_and_order_is_first_seen() {
        let t = resolve_all(
            &refs(&["b", "a", "a", "missing", "b", "missing"]),
            &fleet(),
            &[],
        );
        assert_eq!(names(&t), ["b=b", "a=a", "missing!not_found"]);
    }

    #[test]
    fn a_name_and_an_id_prefix_of_the_same_vm_act_once() {
        let t = resolve_all(
            &refs(&["a", "aaaa1", "aaaa1111000000000000000000000000"]),
            &fleet(),
            &[],
        );
        assert_eq!(names(&t), ["a=a"]);
    }

    #[test]
    fn full_ids_and_unique_prefixes_resolve() {
        let vms = fleet();
        assert_eq!(resolve_one("aaaa2", &vms, &[]).unwrap().name.as_str(), "c");
        assert_eq!(
            resolve_one("bbbb0000000000000000000000000000", &vms, &[])
                .unwrap()
                .name
                .as_str(),
            "b"
        );
    }

    #[test]
    fn an_exact_name_wins_over_an_id_prefix() {
        assert_eq!(
            resolve_one("bbbb", &fleet(), &[]).unwrap().name.as_str(),
            "bbbb"
        );
    }

    #[test]
    fn an_ambiguous_prefix_lists_the_candidates() {
        let err = resolve_one("aaaa", &fleet(), &[]).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Ambiguous);
        insta::assert_snapshot!(err.to_string(), @r#""aaaa" matches 2 VMs: a (aaaa11110000) on h1, c (aaaa22220000) on h1; use the name or more of the id"#);
    }

    #[test]
    fn a_name_on_two_hosts_is_ambiguous() {
        let err = resolve_one("twin", &fleet(), &[]).unwrap_err();
        insta::assert_snapshot!(err.to_string(), @r#""twin" matches 2 VMs: twin (cccc00000000) on h1, twin (dddd00000000) on h2; use the name or more of the id"#);
    }

    #[test]
    fn not_found_names_the_hosts_that_did_not_answer() {
        let err = resolve_one("web", &fleet(), &["h3".to_owned()]).unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotFound);
        insta::assert_snapshot!(err.to_string(), @r#"no VM is named "web" or has an id starting with it (host h3 did not answer; the VM may be there)"#);
        let err = resolve_one("", &fleet(), &[]).unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotFound);
    }

    #[test]
    fn valid_targets_survive_bad_ones() {
        let t = resolve_all(&refs(&["aaaa", "b", "nope"]), &fleet(), &[]);
        assert_eq!(names(&t), ["aaaa!ambiguous", "b=b", "nope!not_found"]);
    }
}
