//! `banger status`: every service on every host.

use std::time::Duration;

use serde::Serialize;

use crate::{App, exit, output};

/// How long `status` collects `$SRV.PING` answers.
const DISCOVERY_WINDOW: Duration = Duration::from_millis(500);

/// Flags of `banger status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {}

#[derive(Debug, Serialize)]
struct Status {
    nats: String,
    services: Vec<banger_bus::client::ServiceInstance>,
}

/// Runs `banger status`.
pub async fn run(app: &App, _args: StatusArgs) -> anyhow::Result<u8> {
    let mut services = app.bus.ping(None, DISCOVERY_WINDOW).await?;
    services.sort_by(|a, b| (a.host(), &a.name).cmp(&(b.host(), &b.name)));
    let status = Status {
        nats: app.config.nats.urls.join(","),
        services,
    };
    if app.json {
        output::print_json(&status)?;
    } else {
        println!("NATS: {}", status.nats);
        let rows: Vec<Vec<String>> = status
            .services
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.host().unwrap_or("?").to_owned(),
                    s.version.clone(),
                    s.id.clone(),
                ]
            })
            .collect();
        print!(
            "{}",
            output::table(&["SERVICE", "HOST", "VERSION", "ID"], &rows)
        );
        if rows.is_empty() {
            println!("no banger service answered: is the stack running (`banger up`)?");
        }
    }
    Ok(if status.services.is_empty() {
        exit::NOT_FOUND_OR_UNAVAILABLE
    } else {
        exit::OK
    })
}
