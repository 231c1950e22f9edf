//! Lab mode: each host's VM subnet, claimed in a JetStream key-value bucket so no two hosts
//! ever use the same one.
//!
//! The bucket (`<PREFIX>_NETD_SUBNETS`, e.g. `BANGER_NETD_SUBNETS`) maps a subnet
//! (`10.77.3.0_24`: the CIDR with `/` written `_`) to the host id holding it. A claim is
//! `kv.create`, which JetStream performs only when the key has no value: of two hosts racing
//! for one subnet, exactly one wins and the other moves on to the next. A netd that starts
//! again finds its own claim and keeps its subnet (so its VMs keep their leases); a host whose
//! configured subnet changed drops its older claims. Claims are never released on exit: a
//! host's subnet is its identity in the lab for as long as the bucket lives.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use banger_bus::Bus;
use banger_proto::HostId;
use futures::TryStreamExt;
use ipnet::Ipv4Net;

use crate::config::LabConfig;

/// Why no subnet could be claimed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The bucket could not be opened or created (no JetStream?).
    #[error(
        "opening the subnet bucket {bucket} (lab_range needs JetStream on the NATS server): \
         {message}"
    )]
    Bucket {
        /// The bucket.
        bucket: String,
        /// The cause.
        message: String,
    },
    /// Reading or writing a claim failed.
    #[error("{what} in bucket {bucket}: {message}")]
    Kv {
        /// What was being done.
        what: String,
        /// The bucket.
        bucket: String,
        /// The cause.
        message: String,
    },
    /// The configured subnet belongs to another host.
    #[error("subnet {subnet} is already claimed by host {holder}; choose another [netd] subnet")]
    Taken {
        /// The subnet.
        subnet: Ipv4Net,
        /// Who holds it.
        holder: String,
    },
    /// Every subnet of the range is claimed.
    #[error("every /{prefix} subnet of lab_range {range} is claimed by another host")]
    Exhausted {
        /// The range.
        range: Ipv4Net,
        /// The prefix.
        prefix: u8,
    },
}

/// The bucket name for a subject prefix: `banger` -> `BANGER_NETD_SUBNETS` (defined in the
/// contract, because the CLI reads the lab's members from it).
pub fn bucket_name(prefix: &str) -> String {
    banger_proto::net::subnet_bucket(prefix)
}

/// The key of `subnet`: `10.77.3.0_24`.
pub fn key_of(subnet: Ipv4Net) -> String {
    format!("{}_{}", subnet.network(), subnet.prefix_len())
}

/// The subnet a key names, if it is one.
pub fn subnet_of(key: &str) -> Option<Ipv4Net> {
    let (addr, len) = key.rsplit_once('_')?;
    Ipv4Net::new(addr.parse().ok()?, len.parse().ok()?).ok()
}

/// What to try, given the current claims (`subnet -> host`): `Reuse` when `host` already holds
/// a subnet of the right size inside the range (the lowest such), else the free candidates in
/// order. A fixed subnet is always the only candidate.
#[derive(Debug, PartialEq, Eq)]
pub enum Choice {
    /// This host already holds it.
    Reuse(Ipv4Net),
    /// Try these, in order.
    Try(Vec<Ipv4Net>),
    /// The fixed subnet is held by someone else.
    Taken(Ipv4Net, String),
}

/// Decides (see [`Choice`]).
pub fn choose(
    claims: &BTreeMap<Ipv4Net, String>,
    host: &str,
    lab: &LabConfig,
    fixed: Option<Ipv4Net>,
) -> Choice {
    if let Some(f) = fixed {
        return match claims.get(&f) {
            Some(h) if h == host => Choice::Reuse(f),
            Some(h) => Choice::Taken(f, h.clone()),
            None => Choice::Try(vec![f]),
        };
    }
    if let Some(mine) = claims.iter().find_map(|(s, h)| {
        (h == host && s.prefix_len() == lab.subnet_prefix && lab.range.contains(s)).then_some(*s)
    }) {
        return Choice::Reuse(mine);
    }
    let free = lab
        .range
        .subnets(lab.subnet_prefix)
        .map(|it| {
            it.filter(|s| !claims.keys().any(|c| c.contains(s) || s.contains(c)))
                .collect()
        })
        .unwrap_or_default();
    Choice::Try(free)
}

/// How long start-up keeps trying while JetStream is not ready (the connection is still being
/// made, or a cluster is still electing its leader).
pub const CLAIM_PATIENCE: Duration = Duration::from_secs(60);

/// [`claim`], retried with backoff for up to `patience` while the bucket cannot be reached;
/// a definite answer (taken, exhausted) is returned at once.
pub async fn claim_patiently(
    bus: &Bus,
    host: &HostId,
    lab: &LabConfig,
    fixed: Option<Ipv4Net>,
    patience: Duration,
) -> Result<Ipv4Net, ClaimError> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut delay = Duration::from_millis(200);
    loop {
        match claim(bus, host, lab, fixed).await {
            Err(e @ (ClaimError::Bucket { .. } | ClaimError::Kv { .. }))
                if tokio::time::Instant::now() + delay < deadline =>
            {
                tracing::info!(error = %e, "subnet bucket not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// Claims this host's subnet: `fixed` (the configured one) or one allocated from the lab range.
/// Returns it; older claims of this host are dropped.
pub async fn claim(
    bus: &Bus,
    host: &HostId,
    lab: &LabConfig,
    fixed: Option<Ipv4Net>,
) -> Result<Ipv4Net, ClaimError> {
    let bucket = bucket_name(bus.subjects().prefix());
    let store = open_bucket(bus, &bucket, lab.bucket_replicas).await?;
    let kv_err = |what: &str| {
        let bucket = bucket.clone();
        let what = what.to_owned();
        move |e: &dyn std::fmt::Display| ClaimError::Kv {
            what,
            bucket,
            message: e.to_string(),
        }
    };
    let claims = read_claims(&store)
        .await
        .map_err(|e| kv_err("reading claims")(&e))?;
    let mine = match choose(&claims, host.as_str(), lab, fixed) {
        Choice::Reuse(s) => s,
        Choice::Taken(subnet, holder) => return Err(ClaimError::Taken { subnet, holder }),
        Choice::Try(candidates) => {
            let mut won = None;
            for s in &candidates {
                match store.create(key_of(*s), host.to_string().into()).await {
                    Ok(_) => {
                        won = Some(*s);
                        break;
                    }
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                        // Someone was faster, or it is this host's own (a restart racing a
                        // stale read): only its own may be taken.
                        let holder = store
                            .get(key_of(*s))
                            .await
                            .map_err(|e| kv_err("reading a claim")(&e))?;
                        if holder.as_deref() == Some(host.as_str().as_bytes()) {
                            won = Some(*s);
                            break;
                        }
                        if fixed.is_some() {
                            return Err(ClaimError::Taken {
                                subnet: *s,
                                holder: holder
                                    .map(|h| String::from_utf8_lossy(&h).into_owned())
                                    .unwrap_or_default(),
                            });
                        }
                    }
                    Err(e) => return Err(kv_err("claiming a subnet")(&e)),
                }
            }
            won.ok_or(ClaimError::Exhausted {
                range: lab.range,
                prefix: lab.subnet_prefix,
            })?
        }
    };
    for (s, h) in &claims {
        if h == host.as_str() && *s != mine {
            tracing::info!(subnet = %s, "dropping this host's older subnet claim");
            store
                .delete(key_of(*s))
                .await
                .map_err(|e| kv_err("dropping an older claim")(&e))?;
        }
    }
    tracing::info!(subnet = %mine, bucket = %bucket, "claimed this host's VM subnet");
    Ok(mine)
}

/// Opens the bucket, creating its stream (file storage, `replicas`) when missing; see
/// [`banger_bus::kv::open`].
async fn open_bucket(bus: &Bus, bucket: &str, replicas: usize) -> Result<kv::Store, ClaimError> {
    banger_bus::kv::open(
        bus,
        bucket,
        banger_bus::kv::BucketSpec {
            description: "banger netd: VM subnet -> host id",
            storage: jetstream::stream::StorageType::File,
            max_age: Duration::ZERO,
            replicas: Some(replicas),
        },
    )
    .await
    .map_err(|message| ClaimError::Bucket {
        bucket: bucket.to_owned(),
        message,
    })
}

async fn read_claims(store: &kv::Store) -> Result<BTreeMap<Ipv4Net, String>, async_nats::Error> {
    let keys: Vec<String> = store.keys().await?.try_collect().await?;
    let mut claims = BTreeMap::new();
    for k in keys {
        let (Some(subnet), Some(host)) = (subnet_of(&k), store.get(&k).await?) else {
            continue;
        };
        claims.insert(subnet, String::from_utf8_lossy(&host).into_owned());
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> LabConfig {
        LabConfig {
            range: "10.77.0.0/22".parse().unwrap(),
            subnet_prefix: 24,
            bucket_replicas: 1,
        }
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn keys_round_trip_and_are_valid_kv_keys() {
        let k = key_of(net("10.77.3.0/24"));
        assert_eq!(k, "10.77.3.0_24");
        assert!(
            k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        );
        assert_eq!(subnet_of(&k), Some(net("10.77.3.0/24")));
        assert_eq!(subnet_of("junk"), None);
        assert_eq!(bucket_name("banger"), "BANGER_NETD_SUBNETS");
    }

    #[test]
    fn a_host_gets_its_own_claim_back() {
        let claims = BTreeMap::from([
            (net("10.77.0.0/24"), "h1".to_owned()),
            (net("10.77.2.0/24"), "h2".to_owned()),
        ]);
        assert_eq!(
            choose(&claims, "h2", &lab(), None),
            Choice::Reuse(net("10.77.2.0/24"))
        );
    }

    #[test]
    fn a_new_host_tries_the_free_subnets_in_order() {
        let claims = BTreeMap::from([
            (net("10.77.0.0/24"), "h1".to_owned()),
            (net("10.77.2.0/23"), "odd".to_owned()),
        ]);
        assert_eq!(
            choose(&claims, "h3", &lab(), None),
            Choice::Try(vec![net("10.77.1.0/24")])
        );
        // A claim of the wrong size is not reused.
        let claims = BTreeMap::from([(net("10.77.0.0/23"), "h3".to_owned())]);
        assert_eq!(
            choose(&claims, "h3", &lab(), None),
            Choice::Try(vec![net("10.77.2.0/24"), net("10.77.3.0/24")])
        );
    }

    #[test]
    fn a_fixed_subnet_is_claimed_or_refused() {
        let claims = BTreeMap::from([(net("10.77.1.0/24"), "h1".to_owned())]);
        let f = Some(net("10.77.1.0/24"));
        assert_eq!(
            choose(&claims, "h2", &lab(), f),
            Choice::Taken(net("10.77.1.0/24"), "h1".into())
        );
        assert_eq!(
            choose(&claims, "h1", &lab(), f),
            Choice::Reuse(net("10.77.1.0/24"))
        );
        assert_eq!(
            choose(&claims, "h1", &lab(), Some(net("10.77.3.0/24"))),
            Choice::Try(vec![net("10.77.3.0/24")])
        );
    }
}
