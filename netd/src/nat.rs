//! banger's one nftables table (family `ip`), through the `nftables` crate (typed JSON for
//! `nft -j`).
//!
//! ```text
//! table ip banger {
//!   chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//!     ip saddr <subnet> oifname != "<bridge>" masquerade      # comment "banger:base"
//!   }                                                        # (one rule per uplink if set)
//!                          # lab mode adds `ip daddr != <lab range>` before `masquerade`
//!   chain prerouting  { type nat hook prerouting priority dstnat; policy accept;
//!     fib daddr type local tcp dport 8080 dnat to <vm ip>:80  # comment "banger:vm:<id>"
//!   }
//!   chain output      { type nat hook output priority -100; policy accept;
//!     fib daddr type local tcp dport 8080 dnat to <vm ip>:80  # comment "banger:vm:<id>"
//!   }
//!   chain forward     { type filter hook forward priority filter; policy accept;
//!     iifname "<bridge>" accept                               # comment "banger:base"
//!     oifname "<bridge>" ct state established,related accept  # comment "banger:base"
//!     oifname "<bridge>" ct status dnat accept                # comment "banger:base"
//!     oifname "<bridge>" ip saddr <lab range> accept          # lab mode only
//!   }
//! }
//! ```
//!
//! Nothing outside this table is touched; deleting it removes every rule banger made. Per-VM
//! rules are found by their comment and removed by handle. When the table or a VM's rules are
//! already gone, removal is skipped rather than failing (a stopped VM whose rules were flushed
//! must still stop cleanly); reconciliation puts back whatever is missing by rebuilding the table
//! in one atomic transaction.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use banger_proto::VmId;
use banger_proto::net::{PortForward, Protocol};
use ipnet::Ipv4Net;
use nftables::batch::Batch;
use nftables::expr::{
    CT, Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, Payload, PayloadField,
    Prefix,
};
use nftables::helper::{self, DEFAULT_NFT, NftablesError};
use nftables::schema::{Chain, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{Match, NAT, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use tokio::sync::Mutex;

/// Comment on every rule that belongs to the table itself.
pub const BASE_COMMENT: &str = "banger:base";
/// Prefix of the comment on a VM's rules; the VM id follows.
pub const VM_COMMENT_PREFIX: &str = "banger:vm:";

/// How long one `nft` invocation may take.
const NFT_TIMEOUT: Duration = Duration::from_secs(15);

const POSTROUTING: &str = "postrouting";
const PREROUTING: &str = "prerouting";
const OUTPUT: &str = "output";
const FORWARD: &str = "forward";
const CHAINS: [&str; 4] = [POSTROUTING, PREROUTING, OUTPUT, FORWARD];

/// Why an nftables operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    /// `nft` failed.
    #[error("nft {what} failed: {detail}")]
    Nft {
        /// What was being done.
        what: &'static str,
        /// stderr of nft, or the error.
        detail: String,
    },
    /// `nft` did not answer in time.
    #[error("nft {0} did not finish within {NFT_TIMEOUT:?}")]
    Timeout(&'static str),
    /// The table is missing or incomplete, so per-VM rules cannot be added to it.
    #[error("nftables table {0} is missing or incomplete")]
    Incomplete(String),
}

fn nft_error(what: &'static str, e: &NftablesError) -> NatError {
    let detail = match e {
        NftablesError::NftFailed { stderr, .. } => stderr.trim().to_owned(),
        other => other.to_string(),
    };
    NatError::Nft { what, detail }
}

/// The rules one VM needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRules {
    /// The VM.
    pub vm: VmId,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its forwards.
    pub forwards: Vec<PortForward>,
}

/// What is in the table now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableState {
    /// The table exists.
    pub present: bool,
    /// Every chain and base rule is there.
    pub base_complete: bool,
    /// Per-VM rules: chain and handle.
    pub vm_rules: HashMap<VmId, Vec<(String, u32)>>,
}

/// The table netd owns.
pub struct Nat {
    table: String,
    bridge: String,
    subnet: Ipv4Net,
    uplinks: Vec<String>,
    /// Lab mode: VM-to-VM traffic within this range crosses hosts unmasqueraded.
    lab_range: Option<Ipv4Net>,
    /// One change at a time: rule handles are read, then used.
    lock: Mutex<()>,
}

fn s(v: impl Into<String>) -> Expression<'static> {
    Expression::String(Cow::Owned(v.into()))
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn matches(
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

fn ct(key: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::CT(CT {
        key: key.into(),
        family: None,
        dir: None,
    }))
}

/// The comment that marks `vm`'s rules.
pub fn vm_comment(vm: &VmId) -> String {
    format!("{VM_COMMENT_PREFIX}{vm}")
}

impl Nat {
    /// The table `table`, masquerading `subnet` from `bridge` towards `uplinks` (or every other
    /// interface when empty).
    pub fn new(table: &str, bridge: &str, subnet: Ipv4Net, uplinks: &[String]) -> Self {
        Self {
            table: table.to_owned(),
            bridge: bridge.to_owned(),
            subnet,
            uplinks: uplinks.to_vec(),
            lab_range: None,
            lock: Mutex::new(()),
        }
    }

    /// Lab mode: traffic from the VM subnet to `range` (the other hosts' VM subnets) keeps its
    /// source address, and traffic from `range` may be forwarded onto the bridge.
    #[must_use]
    pub fn with_lab_range(mut self, range: Option<Ipv4Net>) -> Self {
        self.lab_range = range;
        self
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn table_obj(&self) -> NfListObject<'static> {
        NfListObject::Table(Table {
            family: NfFamily::IP,
            name: self.table.clone().into(),
            handle: None,
        })
    }

    fn chain(&self, name: &'static str) -> NfListObject<'static> {
        let (ty, hook, prio) = match name {
            POSTROUTING => (NfChainType::NAT, NfHook::Postrouting, 100),
            PREROUTING => (NfChainType::NAT, NfHook::Prerouting, -100),
            OUTPUT => (NfChainType::NAT, NfHook::Output, -100),
            _ => (NfChainType::Filter, NfHook::Forward, 0),
        };
        NfListObject::Chain(Chain {
            family: NfFamily::IP,
            table: self.table.clone().into(),
            name: name.into(),
            _type: Some(ty),
            hook: Some(hook),
            prio: Some(prio),
            policy: Some(NfChainPolicy::Accept),
            ..Chain::default()
        })
    }

    fn rule(
        &self,
        chain: &'static str,
        expr: Vec<Statement<'static>>,
        comment: String,
    ) -> NfListObject<'static> {
        NfListObject::Rule(Rule {
            family: NfFamily::IP,
            table: self.table.clone().into(),
            chain: chain.into(),
            expr: expr.into(),
            handle: None,
            index: None,
            comment: Some(comment.into()),
        })
    }

    /// The base rules, in order.
    fn base_rules(&self) -> Vec<NfListObject<'static>> {
        let prefix = |net: Ipv4Net| {
            Expression::Named(NamedExpression::Prefix(Prefix {
                addr: Box::new(s(net.network().to_string())),
                len: u32::from(net.prefix_len()),
            }))
        };
        let saddr = matches(payload("ip", "saddr"), Operator::EQ, prefix(self.subnet));
        let mut out = Vec::new();
        let masq = |oif: Statement<'static>| {
            let mut expr = vec![saddr.clone(), oif];
            if let Some(lab) = self.lab_range {
                expr.push(matches(payload("ip", "daddr"), Operator::NEQ, prefix(lab)));
            }
            expr.push(Statement::Masquerade(None));
            self.rule(POSTROUTING, expr, BASE_COMMENT.to_owned())
        };
        if self.uplinks.is_empty() {
            out.push(masq(matches(
                meta(MetaKey::Oifname),
                Operator::NEQ,
                s(self.bridge.clone()),
            )));
        } else {
            for u in &self.uplinks {
                out.push(masq(matches(
                    meta(MetaKey::Oifname),
                    Operator::EQ,
                    s(u.clone()),
                )));
            }
        }
        let iif = matches(meta(MetaKey::Iifname), Operator::EQ, s(self.bridge.clone()));
        let oif = matches(meta(MetaKey::Oifname), Operator::EQ, s(self.bridge.clone()));
        out.push(self.rule(
            FORWARD,
            vec![iif, Statement::Accept(None)],
            BASE_COMMENT.to_owned(),
        ));
        out.push(self.rule(
            FORWARD,
            vec![
                oif.clone(),
                matches(
                    ct("state"),
                    Operator::IN,
                    Expression::List(vec![s("established"), s("related")]),
                ),
                Statement::Accept(None),
            ],
            BASE_COMMENT.to_owned(),
        ));
        out.push(self.rule(
            FORWARD,
            vec![
                oif.clone(),
                matches(ct("status"), Operator::IN, s("dnat")),
                Statement::Accept(None),
            ],
            BASE_COMMENT.to_owned(),
        ));
        if let Some(lab) = self.lab_range {
            out.push(self.rule(
                FORWARD,
                vec![
                    oif,
                    matches(payload("ip", "saddr"), Operator::EQ, prefix(lab)),
                    Statement::Accept(None),
                ],
                BASE_COMMENT.to_owned(),
            ));
        }
        out
    }

    /// The DNAT rules of one VM (one per forward in each of prerouting and output).
    fn vm_rules(&self, v: &VmRules) -> Vec<NfListObject<'static>> {
        let mut out = Vec::new();
        for pf in &v.forwards {
            let proto = match pf.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
            };
            for chain in [PREROUTING, OUTPUT] {
                let local = matches(
                    Expression::Named(NamedExpression::Fib(Fib {
                        result: FibResult::Type,
                        flags: HashSet::from([FibFlag::Daddr]),
                    })),
                    Operator::EQ,
                    s("local"),
                );
                let dport = matches(
                    payload(proto, "dport"),
                    Operator::EQ,
                    Expression::Number(u32::from(pf.host_port)),
                );
                let dnat = Statement::DNAT(Some(NAT {
                    addr: Some(s(v.ip.to_string())),
                    family: None,
                    port: Some(Expression::Number(u32::from(pf.guest_port))),
                    flags: None,
                }));
                out.push(self.rule(chain, vec![local, dport, dnat], vm_comment(&v.vm)));
            }
        }
        out
    }

    fn base_rule_count(&self) -> usize {
        self.uplinks.len().max(1) + 3 + usize::from(self.lab_range.is_some())
    }

    async fn apply(&self, what: &'static str, batch: Batch<'static>) -> Result<(), NatError> {
        let nft = batch.to_nftables();
        match tokio::time::timeout(NFT_TIMEOUT, helper::apply_ruleset_async(&nft)).await {
            Err(_) => Err(NatError::Timeout(what)),
            Ok(Err(e)) => Err(nft_error(what, &e)),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Reads the table.
    pub async fn state(&self) -> Result<TableState, NatError> {
        let args = ["list", "table", "ip", self.table.as_str()];
        let listed = tokio::time::timeout(
            NFT_TIMEOUT,
            helper::get_current_ruleset_with_args_async(DEFAULT_NFT, &args),
        )
        .await
        .map_err(|_| NatError::Timeout("list table"))?;
        let nft: Nftables<'static> = match listed {
            Ok(n) => n,
            Err(NftablesError::NftFailed { stderr, .. })
                if stderr.contains("No such file or directory") =>
            {
                return Ok(TableState::default());
            }
            Err(e) => return Err(nft_error("list table", &e)),
        };
        Ok(self.parse_state(&nft))
    }

    fn parse_state(&self, nft: &Nftables<'_>) -> TableState {
        let mut state = TableState::default();
        let mut chains = HashSet::new();
        let mut base = 0;
        for obj in nft.objects.iter() {
            let NfObject::ListObject(obj) = obj else {
                continue;
            };
            match obj {
                NfListObject::Table(t) if t.name == self.table => state.present = true,
                NfListObject::Chain(c) if c.table == self.table => {
                    chains.insert(c.name.to_string());
                }
                NfListObject::Rule(r) if r.table == self.table => {
                    let comment = r.comment.as_deref().unwrap_or_default();
                    if comment == BASE_COMMENT {
                        base += 1;
                    } else if let (Some(id), Some(handle)) = (
                        comment
                            .strip_prefix(VM_COMMENT_PREFIX)
                            .and_then(|id| VmId::new(id).ok()),
                        r.handle,
                    ) {
                        state
                            .vm_rules
                            .entry(id)
                            .or_default()
                            .push((r.chain.to_string(), handle));
                    }
                }
                _ => {}
            }
        }
        state.base_complete = state.present
            && CHAINS.iter().all(|c| chains.contains(*c))
            && base == self.base_rule_count();
        state
    }

    /// (Re)creates the whole table with the rules of `vms`, atomically: readers see the old
    /// table or the new one, never a half-built one.
    pub async fn install(&self, vms: &[VmRules]) -> Result<(), NatError> {
        let _one = self.lock.lock().await;
        let mut batch = Batch::new();
        // `add` is a no-op on an existing table, so the `delete` never fails.
        batch.add(self.table_obj());
        batch.delete(self.table_obj());
        batch.add(self.table_obj());
        for c in CHAINS {
            batch.add(self.chain(c));
        }
        for r in self.base_rules() {
            batch.add(r);
        }
        for v in vms {
            for r in self.vm_rules(v) {
                batch.add(r);
            }
        }
        self.apply("install table", batch).await
    }

    /// Replaces `v.vm`'s rules with `v`'s, atomically. Fails with [`NatError::Incomplete`] when
    /// the table is not fully there (the caller reinstalls it).
    pub async fn replace_vm(&self, v: &VmRules) -> Result<(), NatError> {
        let _one = self.lock.lock().await;
        let state = self.state().await?;
        if !state.base_complete {
            return Err(NatError::Incomplete(self.table.clone()));
        }
        let mut batch = Batch::new();
        let mut changes = 0;
        for (chain, handle) in state.vm_rules.get(&v.vm).into_iter().flatten() {
            batch.delete(self.rule_handle(chain, *handle));
            changes += 1;
        }
        for r in self.vm_rules(v) {
            batch.add(r);
            changes += 1;
        }
        if changes == 0 {
            return Ok(());
        }
        self.apply("replace VM rules", batch).await
    }

    fn rule_handle(&self, chain: &str, handle: u32) -> NfListObject<'static> {
        NfListObject::Rule(Rule {
            family: NfFamily::IP,
            table: self.table.clone().into(),
            chain: chain.to_owned().into(),
            expr: Vec::new().into(),
            handle: Some(handle),
            index: None,
            comment: None,
        })
    }

    /// Removes the rules of `vms`; returns how many rules were removed. When the table or the
    /// rules are already gone there is nothing to identify them by: that is skipped, not an
    /// error.
    pub async fn remove_vms(&self, vms: &[VmId]) -> Result<usize, NatError> {
        let _one = self.lock.lock().await;
        let state = self.state().await?;
        if !state.present {
            tracing::debug!(table = %self.table, "table absent: no VM rules to remove");
            return Ok(0);
        }
        let handles: Vec<&(String, u32)> = vms
            .iter()
            .filter_map(|v| state.vm_rules.get(v))
            .flatten()
            .collect();
        if handles.is_empty() {
            return Ok(0);
        }
        let mut batch = Batch::new();
        for (chain, handle) in &handles {
            batch.delete(self.rule_handle(chain, *handle));
        }
        match self.apply("remove VM rules", batch).await {
            Ok(()) => Ok(handles.len()),
            Err(e) => {
                // Removed by someone else in the meantime? Then there is nothing left to do.
                let now = self.state().await?;
                if vms.iter().all(|v| !now.vm_rules.contains_key(v)) {
                    tracing::debug!(error = %e, "VM rules vanished while being removed");
                    Ok(0)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Deletes the table (and so every banger rule); absent is fine.
    pub async fn delete_table(&self) -> Result<(), NatError> {
        let _one = self.lock.lock().await;
        let mut batch = Batch::new();
        batch.add(self.table_obj());
        batch.delete(self.table_obj());
        self.apply("delete table", batch).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nat(uplinks: &[String]) -> Nat {
        Nat::new(
            "banger",
            "banger0",
            "172.16.0.0/24".parse().unwrap(),
            uplinks,
        )
    }

    fn vm() -> VmId {
        VmId::new("0123456789abcdef0123456789abcdef").unwrap()
    }

    #[test]
    fn the_base_ruleset_masquerades_the_subnet_towards_other_interfaces() {
        let json = serde_json::to_string(&nat(&[]).base_rules()).unwrap();
        assert!(json.contains(r#"{"masquerade":null}"#), "{json}");
        assert!(json.contains(r#""op":"!=""#), "{json}");
        assert!(
            json.contains(r#""prefix":{"addr":"172.16.0.0","len":24}"#),
            "{json}"
        );
        assert_eq!(nat(&[]).base_rule_count(), 4);
        let with = nat(&["eth0".into(), "eth1".into()]);
        assert_eq!(with.base_rules().len(), with.base_rule_count());
    }

    #[test]
    fn lab_mode_exempts_the_lab_range_from_masquerade_and_forwards_it_to_the_bridge() {
        let lab = nat(&["eth0".into()]).with_lab_range(Some("10.77.0.0/16".parse().unwrap()));
        let rules = lab.base_rules();
        assert_eq!(rules.len(), lab.base_rule_count());
        let json = serde_json::to_string(&rules).unwrap();
        let masq = serde_json::to_string(&rules[0]).unwrap();
        assert!(
            masq.contains(r#""daddr""#) && masq.contains(r#""op":"!=""#),
            "{masq}"
        );
        assert!(
            masq.contains(r#""prefix":{"addr":"10.77.0.0","len":16}"#),
            "{masq}"
        );
        let last = serde_json::to_string(&rules[rules.len() - 1]).unwrap();
        assert!(
            last.contains(r#""saddr""#) && last.contains("10.77.0.0"),
            "{json}"
        );
    }

    #[test]
    fn vm_rules_dnat_each_forward_in_prerouting_and_output_with_the_vm_comment() {
        let v = VmRules {
            vm: vm(),
            ip: Ipv4Addr::new(172, 16, 0, 2),
            forwards: vec![PortForward {
                host_port: 8080,
                guest_port: 80,
                protocol: Protocol::Udp,
            }],
        };
        let rules = nat(&[]).vm_rules(&v);
        assert_eq!(rules.len(), 2);
        let json = serde_json::to_string(&rules).unwrap();
        assert!(
            json.contains(r#""dnat":{"addr":"172.16.0.2","port":80}"#),
            "{json}"
        );
        assert!(json.contains(&vm_comment(&vm())), "{json}");
        assert!(
            json.contains(r#""protocol":"udp","field":"dport""#),
            "{json}"
        );
    }

    #[test]
    fn state_is_read_back_from_nft_output() {
        let n = nat(&[]);
        let mut objs: Vec<NfObject<'static>> = vec![NfObject::ListObject(n.table_obj())];
        objs.extend(CHAINS.iter().map(|c| NfObject::ListObject(n.chain(c))));
        for (i, r) in n.base_rules().into_iter().enumerate() {
            let NfListObject::Rule(mut r) = r else {
                continue;
            };
            r.handle = Some(u32::try_from(i).unwrap());
            objs.push(NfObject::ListObject(NfListObject::Rule(r)));
        }
        let mut vm_rule = n.rule_handle(PREROUTING, 42);
        if let NfListObject::Rule(r) = &mut vm_rule {
            r.comment = Some(vm_comment(&vm()).into());
        }
        objs.push(NfObject::ListObject(vm_rule));
        let state = n.parse_state(&Nftables {
            objects: objs.clone().into(),
        });
        assert!(state.present && state.base_complete);
        assert_eq!(state.vm_rules[&vm()], vec![(PREROUTING.to_owned(), 42)]);
        // One base rule missing: incomplete.
        objs.remove(5);
        let state = n.parse_state(&Nftables {
            objects: objs.into(),
        });
        assert!(state.present && !state.base_complete);
    }
}
