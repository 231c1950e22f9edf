//! `banger events`: a live, human-readable stream of lifecycle events — what
//! `nats sub 'banger.events.>'` shows, rendered — with optional replay from JetStream.

use banger_proto::event::{EventKind, VmEvent};
use banger_proto::{HostId, VmId};
use futures::StreamExt;

use crate::{App, exit};

/// Flags of `banger events`.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Only events of this VM (name, id or id prefix)
    #[arg(long, value_name = "REF")]
    pub vm: Option<String>,
    /// Only events from this host
    #[arg(long, value_name = "HOST")]
    pub host: Option<HostId>,
    /// Only events of this kind (created, starting, started, stopping, stopped, deleted,
    /// failed, health)
    #[arg(long, value_name = "KIND", value_parser = parse_kind)]
    pub kind: Option<EventKind>,
    /// Stop after this many events (default: run until Ctrl-C)
    #[arg(long, value_name = "N")]
    pub count: Option<usize>,
    /// First replay the events of this past period (e.g. 30s, 10m, 2h, 1d) from JetStream,
    /// then keep watching
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    pub since: Option<std::time::Duration>,
    /// Create the event history (the JetStream stream `--since` replays; `banger up` creates
    /// it on a single host) when it does not exist yet, then exit. In a lab, run it once as the
    /// operator with `--replicas 3`
    #[arg(long, conflicts_with_all = ["vm", "host", "kind", "count", "since"])]
    pub create_history: bool,
    /// Copies of the event history kept by the cluster, with --create-history
    #[arg(long, value_name = "N", default_value_t = 1, requires = "create_history",
          value_parser = clap::value_parser!(u8).range(1..=5))]
    pub replicas: u8,
}

/// Parses `30s`, `10m`, `2h`, `1d`.
fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not an age like 30s, 10m, 2h or 1d"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("unknown unit in {s:?}: use s, m, h or d")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

fn parse_kind(s: &str) -> Result<EventKind, String> {
    EventKind::from_wire(s).ok_or_else(|| {
        let all: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        format!("unknown event kind {s:?}; use one of: {}", all.join(", "))
    })
}

/// Event subjects and payloads, from a live subscription or a replay.
type Messages = futures::stream::BoxStream<'static, (String, bytes::Bytes)>;

async fn live(app: &App, filter: &str) -> anyhow::Result<Messages> {
    let sub = app.bus.client().subscribe(filter.to_owned()).await?;
    // The subscription is registered once the server has seen it: flush so an event published
    // right after this command prints its first line is not missed.
    app.bus.client().flush().await?;
    Ok(sub.map(|m| (m.subject.to_string(), m.payload)).boxed())
}

/// Replays from the event stream (an ordered consumer starting at now - `age`), then follows
/// new events through the same consumer.
async fn replay(app: &App, filter: &str, age: std::time::Duration) -> anyhow::Result<Messages> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
    let js = async_nats::jetstream::new(app.bus.client().clone());
    let name = banger_bus::history::stream_name(app.bus.subjects().prefix());
    let stream = js.get_stream(&name).await.map_err(|e| {
        anyhow::anyhow!(
            "event history is not available ({e}): the JetStream stream {name} is created by \
             `banger up` (in a lab: `banger events --create-history --replicas 3`); events since \
             then can be replayed"
        )
    })?;
    let start_ms =
        banger_bus::now_ms().saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
    let start = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(start_ms) * 1_000_000)?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: filter.to_owned(),
            deliver_policy: DeliverPolicy::ByStartTime { start_time: start },
            ..Default::default()
        })
        .await?;
    let messages = consumer.messages().await?;
    Ok(messages
        .filter_map(|m| async move {
            match m {
                Ok(m) => Some((m.subject.to_string(), m.payload.clone())),
                Err(e) => {
                    eprintln!("warning: reading event history: {e}");
                    None
                }
            }
        })
        .boxed())
}

/// Whether `event` matches a VM reference: its name, full id or an id prefix.
fn matches_ref(event: &VmEvent, vm_ref: &str) -> bool {
    event.vm.name.as_str() == vm_ref || event.vm.id.as_str().starts_with(vm_ref)
}

/// One line per event for people.
pub fn render(event: &VmEvent) -> String {
    let ip = event.vm.network.as_ref().map_or("-", |n| n.ip.as_str());
    let mut line = format!(
        "{} {:<9} {:<20} host={} state={} ip={} id={}",
        format_time(event.at_ms),
        event.kind.as_str(),
        event.vm.name.as_str(),
        event.vm.host,
        event.vm.state,
        ip,
        event.vm.id.short(),
    );
    if let Some(reason) = &event.vm.reason {
        line.push_str(&format!(" reason={reason:?}"));
    }
    line
}

/// `HH:MM:SS.mmm` UTC of a millisecond timestamp.
fn format_time(ms: u64) -> String {
    let secs = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60,
        ms % 1000
    )
}

/// Runs `banger events`.
pub async fn run(app: &App, args: EventsArgs) -> anyhow::Result<u8> {
    if args.create_history {
        banger_bus::history::ensure_replicated_event_stream(&app.bus, usize::from(args.replicas))
            .await?;
        let name = banger_bus::history::stream_name(app.bus.subjects().prefix());
        eprintln!("event history {name} is in place");
        return Ok(exit::OK);
    }
    // A full id narrows the subscription itself; names and prefixes are filtered here.
    let vm_id = args.vm.as_deref().and_then(|r| VmId::new(r).ok());
    let filter = app
        .bus
        .subjects()
        .events_filter(args.host.as_ref(), vm_id.as_ref(), args.kind);
    let mut messages = match args.since {
        None => live(app, &filter).await?,
        Some(age) => replay(app, &filter, age).await?,
    };
    // On stderr even with --json: stdout carries only events, and a script can wait for this
    // line to know the subscription is in place.
    eprintln!("watching {filter} (Ctrl-C to stop)");
    let mut seen = 0usize;
    loop {
        let msg = tokio::select! {
            m = messages.next() => m,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some((subject, payload)) = msg else { break };
        let event: VmEvent = match serde_json::from_slice(&payload) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("warning: ignoring a malformed event on {subject}: {e}");
                continue;
            }
        };
        if let Some(r) = &args.vm
            && !matches_ref(&event, r)
        {
            continue;
        }
        if app.json {
            println!("{}", serde_json::to_string(&event)?);
        } else {
            println!("{}", render(&event));
        }
        seen += 1;
        if args.count.is_some_and(|n| seen >= n) {
            break;
        }
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> VmEvent {
        banger_proto::testing::vm_event(
            "web",
            "0123456789abcdef0123456789abcdef",
            "h1",
            EventKind::Started,
            7,
            3_723_004,
        )
    }

    #[test]
    fn events_render_as_one_readable_line() {
        assert_eq!(
            render(&event()),
            "01:02:03.004 started   web                  host=h1 state=running \
             ip=172.16.0.2 id=0123456789ab"
        );
    }

    #[test]
    fn vm_refs_match_by_name_or_id_prefix() {
        let e = event();
        assert!(matches_ref(&e, "web"));
        assert!(matches_ref(&e, "0123"));
        assert!(!matches_ref(&e, "db"));
        assert!(!matches_ref(&e, "1234"));
    }

    #[test]
    fn ages_parse_with_units() {
        assert_eq!(parse_age("30s").unwrap().as_secs(), 30);
        assert_eq!(parse_age("10m").unwrap().as_secs(), 600);
        assert_eq!(parse_age("2h").unwrap().as_secs(), 7200);
        assert_eq!(parse_age("1d").unwrap().as_secs(), 86_400);
        assert!(parse_age("ten minutes").is_err());
        assert!(parse_age("5w").is_err());
    }

    #[test]
    fn unknown_kinds_are_a_usage_error() {
        assert_eq!(parse_kind("stopped"), Ok(EventKind::Stopped));
        assert!(parse_kind("exploded").unwrap_err().contains("use one of"));
    }
}
