//! Accept rules for the VM bridge in iptables' `FORWARD` path, for hosts where another
//! firewall drops forwarded traffic by policy (Docker does).
//!
//! When Docker turns IPv4 forwarding on, it sets the policy of iptables' `FORWARD` chain to
//! DROP and accepts only its own bridges. With iptables-nft that chain is an nftables base
//! chain (`table ip filter`, hook forward, policy drop), and in nftables a packet dropped by
//! *any* base chain at a hook is dropped: the accepts in netd's own table cannot override it,
//! and guests behind the bridge lose every outbound packet. So netd puts accepts where that
//! policy is decided, as libvirt (its `LIBVIRT_FW*` chains) and LXD's documented fix do:
//!
//! ```text
//! -A DOCKER-USER -i <bridge> -j ACCEPT                                   (or FORWARD)
//! -A DOCKER-USER -o <bridge> -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
//! -A DOCKER-USER -o <bridge> -m conntrack --ctstate DNAT -j ACCEPT        (port forwards)
//! -A DOCKER-USER -o <bridge> -s <lab range> -j ACCEPT                     (lab mode only)
//! ```
//!
//! each with `-m comment --comment banger:<table>`, inserted at the top of `DOCKER-USER` when
//! Docker made that chain (Docker documents it as its users' chain, evaluates it first and
//! never flushes it), else at the top of `FORWARD`. Through the `iptables` binary, so the rules
//! land in the back-end (nft or legacy) the host, and Docker, use; never as raw nft rules in
//! iptables' tables, which iptables-nft could not read back (Docker's own iptables calls would
//! then fail on an "incompatible" table).
//!
//! Only when needed: nothing is added while the `FORWARD` policy accepts (or iptables is not
//! installed). Start-up and every reconcile look again, so a Docker started after netd is caught
//! within one reconcile interval. The rules go with the nftables table when netd exits idle
//! ([`crate::exit`]), and stay with it while VMs hold the network.

use std::time::Duration;

use ipnet::Ipv4Net;
use tokio::process::Command;

/// How long one `iptables` invocation may take (it waits for the xtables lock up to this).
const IPTABLES_TIMEOUT: Duration = Duration::from_secs(15);

/// The chain whose policy Docker sets.
pub const FORWARD: &str = "FORWARD";
/// The chain Docker evaluates first and leaves to its users.
pub const DOCKER_USER: &str = "DOCKER-USER";

/// Why an iptables operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardAcceptError {
    /// iptables could not be run.
    #[error("running iptables {args}")]
    Spawn {
        /// The arguments.
        args: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// iptables refused.
    #[error("iptables {args} failed: {stderr}")]
    Failed {
        /// The arguments.
        args: String,
        /// What it said.
        stderr: String,
    },
    /// iptables did not answer in time.
    #[error("iptables {0} did not finish within {IPTABLES_TIMEOUT:?}")]
    Timeout(String),
}

/// What [`ForwardAccept::ensure`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensured {
    /// The `FORWARD` policy accepts (or there is no iptables): nothing is needed.
    NotNeeded,
    /// The policy drops; netd's accepts are in `chain` (`added` of them just now).
    Present {
        /// Where they are.
        chain: &'static str,
        /// How many were missing and added.
        added: usize,
    },
}

/// netd's accept rules for one bridge.
#[derive(Debug, Clone)]
pub struct ForwardAccept {
    bridge: String,
    comment: String,
    lab_range: Option<Ipv4Net>,
    program: String,
}

impl ForwardAccept {
    /// The rules for `bridge`, marked with the comment `banger:<table>`.
    pub fn new(bridge: &str, table: &str, lab_range: Option<Ipv4Net>) -> Self {
        Self {
            bridge: bridge.to_owned(),
            comment: format!("banger:{table}"),
            lab_range,
            program: "iptables".to_owned(),
        }
    }

    /// The comment on every rule.
    pub fn comment(&self) -> &str {
        &self.comment
    }

    /// Each rule's match and target, without the chain.
    pub fn rule_specs(&self) -> Vec<Vec<String>> {
        let b = self.bridge.as_str();
        let mut specs = vec![
            vec!["-i", b],
            vec![
                "-o",
                b,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
            ],
            vec!["-o", b, "-m", "conntrack", "--ctstate", "DNAT"],
        ]
        .into_iter()
        .map(|v| v.into_iter().map(str::to_owned).collect::<Vec<_>>())
        .collect::<Vec<_>>();
        if let Some(lab) = self.lab_range {
            specs.push(vec![
                "-o".into(),
                b.to_owned(),
                "-s".into(),
                lab.to_string(),
            ]);
        }
        for s in &mut specs {
            s.extend(
                ["-m", "comment", "--comment", &self.comment, "-j", "ACCEPT"]
                    .into_iter()
                    .map(str::to_owned),
            );
        }
        specs
    }

    /// Puts the accepts in place when the `FORWARD` policy drops; a no-op otherwise.
    pub async fn ensure(&self) -> Result<Ensured, ForwardAcceptError> {
        if !self.available() {
            return Ok(Ensured::NotNeeded);
        }
        let rules = self.list().await?;
        if !policy_drops(&rules) {
            return Ok(Ensured::NotNeeded);
        }
        let chain = if rules.lines().any(|l| l.trim() == "-N DOCKER-USER") {
            DOCKER_USER
        } else {
            FORWARD
        };
        let mut added = 0;
        // Inserted at the top in reverse, so they read in order.
        for spec in self.rule_specs().iter().rev() {
            if !self.holds(chain, spec).await? {
                let mut args = vec!["-w".to_owned(), "-I".into(), chain.into(), "1".into()];
                args.extend(spec.iter().cloned());
                self.run(&args).await?;
                added += 1;
            }
        }
        if added > 0 {
            tracing::info!(
                chain,
                bridge = %self.bridge,
                rules = added,
                "the iptables FORWARD policy drops forwarded traffic (Docker sets it): \
                 added accept rules for the bridge"
            );
        }
        Ok(Ensured::Present { chain, added })
    }

    /// Removes every rule carrying our comment, in any chain of iptables' filter table (so
    /// also those of an older netd or another lab range); returns how many were removed.
    pub async fn remove(&self) -> Result<usize, ForwardAcceptError> {
        if !self.available() {
            return Ok(0);
        }
        let rules = self.list().await?;
        let mut removed = 0;
        for line in rules.lines().filter(|l| self.is_ours(l)) {
            let mut words = split_rule(line);
            // "-A CHAIN spec..." becomes "-D CHAIN spec...".
            if words.len() < 3 {
                continue;
            }
            words[0] = "-D".into();
            let mut args = vec!["-w".to_owned()];
            args.extend(words);
            self.run(&args).await?;
            removed += 1;
        }
        if removed > 0 {
            tracing::info!(bridge = %self.bridge, rules = removed, "removed the iptables accept rules");
        }
        Ok(removed)
    }

    /// Whether a line of `iptables -S` is one of ours.
    fn is_ours(&self, line: &str) -> bool {
        line.starts_with("-A ")
            && (line.contains(&format!("--comment {} ", self.comment))
                || line.contains(&format!("--comment \"{}\" ", self.comment)))
    }

    fn available(&self) -> bool {
        std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|d| d.join(&self.program).is_file())
        })
    }

    /// `iptables -S`: the filter table's policies, chains and rules (the built-in chains'
    /// default policies when the table does not exist yet).
    async fn list(&self) -> Result<String, ForwardAcceptError> {
        self.run(&["-w".to_owned(), "-S".to_owned()]).await
    }

    /// `iptables -C`: whether `chain` holds the rule.
    async fn holds(&self, chain: &str, spec: &[String]) -> Result<bool, ForwardAcceptError> {
        let mut args = vec!["-w".to_owned(), "-C".into(), chain.into()];
        args.extend(spec.iter().cloned());
        match self.run(&args).await {
            Ok(_) => Ok(true),
            // iptables -C exits 1 with "Bad rule" / "does a matching rule exist" when it is not.
            Err(ForwardAcceptError::Failed { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn run(&self, args: &[String]) -> Result<String, ForwardAcceptError> {
        let joined = args.join(" ");
        let out = tokio::time::timeout(
            IPTABLES_TIMEOUT,
            Command::new(&self.program)
                .args(args)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| ForwardAcceptError::Timeout(joined.clone()))?
        .map_err(|source| ForwardAcceptError::Spawn {
            args: joined.clone(),
            source,
        })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(ForwardAcceptError::Failed {
                args: joined,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }
}

/// Whether `iptables -S FORWARD` output says the chain's policy drops.
pub fn policy_drops(listing: &str) -> bool {
    listing
        .lines()
        .any(|l| l.trim() == "-P FORWARD DROP" || l.trim() == "-P FORWARD REJECT")
}

/// Splits one rule of `iptables -S` into arguments, honouring double quotes (comments).
fn split_rule(spec: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    let mut chars = spec.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ' ' if !quoted => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_accept_the_bridge_its_replies_and_its_port_forwards() {
        let f = ForwardAccept::new("banger0", "banger", None);
        let specs: Vec<String> = f.rule_specs().iter().map(|s| s.join(" ")).collect();
        assert_eq!(
            specs,
            [
                "-i banger0 -m comment --comment banger:banger -j ACCEPT",
                "-o banger0 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment \
                 banger:banger -j ACCEPT",
                "-o banger0 -m conntrack --ctstate DNAT -m comment --comment banger:banger -j ACCEPT",
            ]
        );
        let lab = ForwardAccept::new("br1", "t1", Some("10.77.0.0/16".parse().unwrap()));
        let last = lab.rule_specs().last().unwrap().join(" ");
        assert_eq!(
            last,
            "-o br1 -s 10.77.0.0/16 -m comment --comment banger:t1 -j ACCEPT"
        );
    }

    #[test]
    fn a_drop_policy_is_recognised() {
        assert!(policy_drops("-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n"));
        assert!(!policy_drops("-P FORWARD ACCEPT\n"));
        assert!(!policy_drops(""));
    }

    #[test]
    fn listed_rules_split_back_into_arguments() {
        assert_eq!(
            split_rule(r#"-i banger0 -m comment --comment "banger: a b" -j ACCEPT"#),
            [
                "-i",
                "banger0",
                "-m",
                "comment",
                "--comment",
                "banger: a b",
                "-j",
                "ACCEPT"
            ]
        );
        assert_eq!(split_rule("-i x  -j ACCEPT"), ["-i", "x", "-j", "ACCEPT"]);
    }

    #[test]
    fn only_our_rules_are_ours() {
        let f = ForwardAccept::new("banger0", "banger", None);
        assert!(f.is_ours("-A FORWARD -i banger0 -m comment --comment banger:banger -j ACCEPT"));
        assert!(!f.is_ours("-A FORWARD -i banger0 -m comment --comment banger:other -j ACCEPT"));
        assert!(!f.is_ours("-A FORWARD -i docker0 -j ACCEPT"));
        assert!(!f.is_ours("-P FORWARD DROP"));
    }
}
