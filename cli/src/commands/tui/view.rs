//! Drawing the [`Model`]: a title line (connection state), the VM table, the details and logs
//! panes (side by side when the terminal is wide, one at a time otherwise), a status line and a
//! key line, and the popup of the current mode on top. Pure: the same model and clock draw the
//! same screen, which is what the render tests pin.
//!
//! Every size is computed with saturating arithmetic and clamped to the frame, and a terminal
//! smaller than [`MIN_WIDTH`] x [`MIN_HEIGHT`] gets a one-line notice instead of the layout, so
//! no terminal size can make drawing panic.

use banger_proto::vm::{VmInfo, VmState};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, Paragraph, Row as TableRow, Table, TableState, Wrap,
};

use super::form::FIELDS;
use super::keys::KEYS;
use super::state::{Connection, HealthView, Mode, Model, Pane, Row, uptime};
use crate::commands::vm::units::format_mib;

/// Below this width the layout does not fit; a notice is drawn instead.
pub(crate) const MIN_WIDTH: u16 = 40;
/// Below this height the layout does not fit; a notice is drawn instead.
pub(crate) const MIN_HEIGHT: u16 = 12;
/// From this width on, details and logs are side by side.
pub(crate) const SIDE_BY_SIDE: u16 = 110;

/// Draws the whole screen.
pub(crate) fn render(frame: &mut Frame<'_>, model: &Model, now_ms: u64) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let notice = Paragraph::new(format!(
            "terminal too small: {}x{} (needs {MIN_WIDTH}x{MIN_HEIGHT}); q quits",
            area.width, area.height
        ))
        .wrap(Wrap { trim: true });
        frame.render_widget(notice, area);
        return;
    }
    let [title, table, panes, status, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Percentage(45),
        Constraint::Min(5),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(title_line(model), title);
    render_table(frame, table, model, now_ms);
    let selected = model.selected_row();
    if panes.width >= SIDE_BY_SIDE {
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                .areas(panes);
        render_details(frame, left, selected, now_ms);
        render_logs(frame, right, model, selected);
    } else {
        match model.pane {
            Pane::Details => render_details(frame, panes, selected, now_ms),
            Pane::Logs => render_logs(frame, panes, model, selected),
        }
    }
    frame.render_widget(status_line(model), status);
    frame.render_widget(
        Paragraph::new(key_line(keys.width)).style(Style::default().fg(Color::DarkGray)),
        keys,
    );
    render_popup(frame, area, model);
}

/// The bottom line of keys: the longest version that fits `width`.
fn key_line(width: u16) -> &'static str {
    const LINES: [&str; 3] = [
        "s start  x stop  r restart  d delete  c create  e exec  Enter ssh  l logs  ? help  q quit",
        "s/x/r start/stop/restart  d delete  c create  e exec  Enter ssh  ? help  q quit",
        "? help  q quit",
    ];
    LINES
        .iter()
        .find(|l| l.chars().count() <= usize::from(width))
        .unwrap_or(&LINES[2])
}

fn title_line(model: &Model) -> Paragraph<'static> {
    let (hosts, vms) = model.counts();
    let mut spans = vec![Span::styled(
        "banger",
        Style::default().add_modifier(Modifier::BOLD),
    )];
    spans.push(Span::raw(format!(
        "  {vms} VM{} on {hosts} host{}  ",
        if vms == 1 { "" } else { "s" },
        if hosts == 1 { "" } else { "s" }
    )));
    match model.connection {
        Connection::Connected => spans.push(Span::styled(
            "connected, live",
            Style::default().fg(Color::Green),
        )),
        Connection::Disconnected => spans.push(Span::styled(
            "DISCONNECTED: reconnecting, the table may be out of date",
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        )),
    }
    if !model.unreachable.is_empty() {
        spans.push(Span::styled(
            format!("  not answering: {}", model.unreachable.join(", ")),
            Style::default().fg(Color::Yellow),
        ));
    }
    if model.simulated {
        // The banner other commands print on stderr; here the TUI owns the terminal.
        spans.push(Span::styled(
            "  SIMULATED HYPERVISOR (banger-fcsim: no real guest kernel)",
            Style::default()
                .fg(Color::Yellow)
                .add_modifier(Modifier::BOLD),
        ));
    }
    Paragraph::new(Line::from(spans))
}

fn state_style(state: VmState) -> Style {
    match state {
        VmState::Running => Style::default().fg(Color::Green),
        VmState::Failed => Style::default().fg(Color::Red),
        VmState::Stopped => Style::default().fg(Color::DarkGray),
        _ => Style::default().fg(Color::Yellow),
    }
}

fn render_table(frame: &mut Frame<'_>, area: Rect, model: &Model, now_ms: u64) {
    let block = Block::default().borders(Borders::ALL).title(" VMs ");
    let rows = model.ordered();
    if rows.is_empty() {
        let text = if model.loaded {
            "no VMs yet: press c to create one"
        } else {
            "listing VMs…"
        };
        frame.render_widget(Paragraph::new(text).block(block), area);
        return;
    }
    let header = TableRow::new(
        [
            "NAME", "HOST", "STATE", "IP", "CPUS", "MEM", "UPTIME", "HEALTH",
        ]
        .map(|h| Cell::from(h).style(Style::default().add_modifier(Modifier::BOLD))),
    );
    let body: Vec<TableRow<'_>> = rows
        .iter()
        .map(|r| {
            let v = &r.vm;
            TableRow::new(vec![
                Cell::from(v.name.to_string()),
                Cell::from(v.host.to_string()),
                Cell::from(v.state.to_string()).style(state_style(v.state)),
                Cell::from(v.network.as_ref().map_or("-".into(), |n| n.ip.clone())),
                Cell::from(v.cpus.to_string()),
                Cell::from(format_mib(v.memory_mib)),
                Cell::from(uptime(v, now_ms)),
                Cell::from(r.health.cell().to_owned()),
            ])
        })
        .collect();
    let name_width = rows
        .iter()
        .map(|r| r.vm.name.as_str().chars().count())
        .max()
        .unwrap_or(0)
        .clamp(4, 32);
    let widths = [
        Constraint::Length(u16::try_from(name_width).unwrap_or(32)),
        Constraint::Length(10),
        Constraint::Length(9),
        Constraint::Length(15),
        Constraint::Length(4),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
    ];
    let table = Table::new(body, widths)
        .header(header)
        .block(block)
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ");
    let mut state = TableState::default().with_selected(model.selected_index());
    frame.render_stateful_widget(table, area, &mut state);
}

fn kv(key: &str, value: String) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{key:<9} "), Style::default().fg(Color::Cyan)),
        Span::raw(value),
    ])
}

/// The details pane's lines for one row.
pub(crate) fn details_lines(row: &Row, now_ms: u64) -> Vec<Line<'static>> {
    let v: &VmInfo = &row.vm;
    let mut lines = vec![
        kv(
            "vm",
            format!("{} ({}.vm) id {}", v.name, v.name, v.id.short()),
        ),
        kv(
            "state",
            match v.state {
                VmState::Running => format!("running, up {}", uptime(v, now_ms)),
                s => s.to_string(),
            },
        ),
    ];
    if let Some(r) = &v.reason {
        lines.push(kv("reason", r.clone()));
    }
    lines.push(kv(
        "config",
        format!(
            "image {}, {} vCPU, {} memory, host {}",
            v.image,
            v.cpus,
            format_mib(v.memory_mib),
            v.host
        ),
    ));
    lines.push(kv(
        "volumes",
        format!(
            "root: copy-on-write of {}; work: {} ext4 at /root",
            v.image,
            format_mib(v.disk_mib)
        ),
    ));
    lines.push(kv(
        "network",
        match &v.network {
            Some(n) => format!("{} mac {} tap {}", n.ip, n.mac, n.tap),
            None => "- (no network while stopped)".into(),
        },
    ));
    for p in &v.port_forwards {
        lines.push(kv(
            "forward",
            format!(
                "host {} -> guest {} {:?}",
                p.host_port, p.guest_port, p.protocol
            )
            .to_lowercase(),
        ));
    }
    lines.push(kv(
        "health",
        match &row.health {
            HealthView::Unknown => "-".into(),
            HealthView::Healthy { agent } => format!("ok (agent {agent})"),
            HealthView::Unhealthy(why) => format!("down: {why}"),
        },
    ));
    lines.push(Line::from(Span::styled(
        "last events",
        Style::default().fg(Color::Cyan),
    )));
    if row.events.is_empty() {
        lines.push(Line::from("  none since the TUI started"));
    }
    for e in &row.events {
        lines.push(Line::from(format!(
            "  {} {:<8} -> {}",
            clock(e.at_ms),
            e.kind.as_str(),
            e.state
        )));
    }
    lines
}

fn render_details(frame: &mut Frame<'_>, area: Rect, row: Option<&Row>, now_ms: u64) {
    let title = row.map_or(" details ".to_owned(), |r| {
        format!(" details: {} ", r.vm.name)
    });
    let block = Block::default().borders(Borders::ALL).title(title);
    let lines = row.map_or_else(
        || vec![Line::from("select a VM")],
        |r| details_lines(r, now_ms),
    );
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        area,
    );
}

/// The printable part of console output: control characters (escape sequences, carriage
/// returns) would move the real cursor, so they go; tabs become spaces.
pub(crate) fn printable(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            '\t' => Some(' '),
            '\n' => Some('\n'),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect()
}

fn render_logs(frame: &mut Frame<'_>, area: Rect, model: &Model, row: Option<&Row>) {
    let title = row.map_or(" log ".to_owned(), |r| {
        format!(" log: {} (serial console) ", r.vm.name)
    });
    let block = Block::default().borders(Borders::ALL).title(title);
    let text = match (row, &model.log) {
        (Some(r), Some((id, text, Some(_)))) if *id == r.vm.id && text.is_empty() => {
            "no output yet".to_owned()
        }
        (Some(r), Some((id, text, _))) if *id == r.vm.id => printable(text),
        (Some(_), _) => "reading…".to_owned(),
        (None, _) => "select a VM".to_owned(),
    };
    // The end of the log: as many lines as fit.
    let height = usize::from(area.height.saturating_sub(2));
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(height)..].join("\n");
    frame.render_widget(Paragraph::new(tail).block(block), area);
}

fn status_line(model: &Model) -> Paragraph<'static> {
    match &model.status {
        Some(s) if s.error => Paragraph::new(s.text.clone()).style(Style::default().fg(Color::Red)),
        Some(s) => Paragraph::new(s.text.clone()),
        None => Paragraph::new(""),
    }
}

/// A `width` x `height` rectangle centred in `area`, never larger than it.
fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

fn popup(frame: &mut Frame<'_>, area: Rect, title: String, lines: Vec<Line<'static>>, width: u16) {
    let height = u16::try_from(lines.len())
        .unwrap_or(u16::MAX)
        .saturating_add(2);
    let rect = centered(area, width, height);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines)
            .block(Block::default().borders(Borders::ALL).title(title))
            .wrap(Wrap { trim: false }),
        rect,
    );
}

fn hint(text: &str) -> Line<'static> {
    Line::from(Span::styled(
        text.to_owned(),
        Style::default().fg(Color::DarkGray),
    ))
}

fn render_popup(frame: &mut Frame<'_>, area: Rect, model: &Model) {
    let red = Style::default().fg(Color::Red);
    match &model.mode {
        Mode::Normal => {}
        Mode::Help => {
            let mut lines: Vec<Line<'static>> = KEYS
                .iter()
                .map(|(k, what)| kv(k, (*what).to_owned()))
                .collect();
            lines.push(Line::from(""));
            lines.push(hint("The table follows lifecycle events as they happen."));
            lines.push(hint("any key closes this help"));
            popup(frame, area, " keys ".into(), lines, 60);
        }
        Mode::ConfirmDelete(vm) => popup(
            frame,
            area,
            " delete ".into(),
            vec![
                Line::from(format!(
                    "Delete {} and everything it owns (disks, address, DNS name)?",
                    vm.name
                )),
                hint("y deletes, any other key cancels"),
            ],
            64,
        ),
        Mode::Create(form) => {
            let mut lines = Vec::new();
            for (i, field) in FIELDS.iter().enumerate() {
                let focused = i == form.focus;
                let value = form.values.get(i).map_or("", String::as_str);
                let shown = if value.is_empty() && !focused {
                    Span::styled(field.placeholder(), Style::default().fg(Color::DarkGray))
                } else if focused {
                    Span::styled(
                        format!("{value}_"),
                        Style::default().add_modifier(Modifier::BOLD),
                    )
                } else {
                    Span::raw(value.to_owned())
                };
                lines.push(Line::from(vec![
                    Span::raw(if focused { "> " } else { "  " }),
                    Span::styled(
                        format!("{:<7}", field.label()),
                        Style::default().fg(Color::Cyan),
                    ),
                    shown,
                ]));
                if let Some(Some(err)) = form.errors.get(i) {
                    lines.push(Line::from(Span::styled(format!("    {err}"), red)));
                }
            }
            lines.push(hint("Tab next field, Enter create and start, Esc cancel"));
            popup(frame, area, " create a VM ".into(), lines, 72);
        }
        Mode::ExecPrompt { vm, input, error } => {
            let mut lines = vec![Line::from(format!("{}$ {input}_", vm.name))];
            if let Some(e) = error {
                lines.push(Line::from(Span::styled(e.clone(), red)));
            }
            lines.push(hint(
                "runs without a shell (use sh -c '...' for pipes); Enter runs, Esc cancels",
            ));
            popup(frame, area, " exec ".into(), lines, 72);
        }
        Mode::ExecOutput {
            title,
            text,
            scroll,
        } => {
            let body = text
                .as_deref()
                .map_or_else(|| "running…".to_owned(), printable);
            let rect = centered(
                area,
                area.width.saturating_sub(8),
                area.height.saturating_sub(4),
            );
            frame.render_widget(Clear, rect);
            frame.render_widget(
                Paragraph::new(body)
                    .block(
                        Block::default()
                            .borders(Borders::ALL)
                            .title(format!(" {title} "))
                            .title_bottom(" ↑/↓ scroll, any other key closes "),
                    )
                    .scroll((*scroll, 0)),
                rect,
            );
        }
    }
}

/// `HH:MM:SS` UTC of a millisecond timestamp.
fn clock(ms: u64) -> String {
    let secs = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use banger_proto::agent::Health;
    use banger_proto::event::{EventKind, VmEvent};
    use banger_proto::testing::vm_info;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::*;
    use crate::commands::tui::state::{Action, Msg};

    const NOW: u64 = 86_400_000 + 3_600_000;

    fn screen(model: &Model, width: u16, height: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(width, height)).unwrap();
        t.draw(|f| render(f, model, NOW)).unwrap();
        // (TestBackend cannot print a zero-width buffer; drawing it is what is tested.)
        if width == 0 {
            return String::new();
        }
        t.backend().to_string()
    }

    fn fleet() -> Model {
        let mut m = Model::default();
        let mut web = vm_info("web", "aaaa1111000000000000000000000000", "lab1");
        web.started_at_ms = Some(NOW - 300_000);
        web.updated_at_ms = NOW - 300_000;
        let mut db = vm_info("db", "bbbb2222000000000000000000000000", "lab2");
        db.state = VmState::Stopped;
        db.network = None;
        m.apply(Msg::Snapshot {
            vms: vec![db, web.clone()],
            unreachable: vec![],
            requested_at_ms: NOW,
        });
        let mut started = web;
        started.updated_at_ms = NOW - 200_000;
        m.apply(Msg::Event(VmEvent {
            kind: EventKind::Started,
            at_ms: NOW - 200_000,
            seq: 4,
            vm: started,
        }));
        m.apply(Msg::Health {
            id: banger_proto::VmId::new("aaaa1111000000000000000000000000").unwrap(),
            result: Ok(Health {
                status: "ok".into(),
                uptime_secs: 1.0,
                hostname: "web".into(),
                agent_version: "0.1.0".into(),
                boot_id: "b".into(),
                load: [0.0; 3],
                mem_total_bytes: 1,
                mem_available_bytes: 1,
                rootfs_total_bytes: 1,
                rootfs_free_bytes: 1,
            }),
        });
        m
    }

    #[test]
    fn the_table_and_details_render_for_people() {
        insta::assert_snapshot!(screen(&fleet(), 120, 30));
    }

    #[test]
    fn a_lost_connection_is_shown_in_the_title() {
        let mut m = fleet();
        m.apply(Msg::Connection(Connection::Disconnected));
        let s = screen(&m, 100, 20);
        assert!(s.contains("DISCONNECTED"), "{s}");
    }

    #[test]
    fn a_simulated_stack_is_named_in_the_title_not_over_the_key_line() {
        let mut m = fleet();
        assert!(!screen(&m, 120, 20).contains("SIMULATED"));
        m.simulated = true;
        let s = screen(&m, 120, 20);
        let first = s.lines().next().unwrap_or_default();
        assert!(first.contains("SIMULATED HYPERVISOR"), "{s}");
        let last = s.lines().last().unwrap_or_default();
        assert!(
            last.contains("q quit") && !last.contains("SIMULATED"),
            "{s}"
        );
    }

    #[test]
    fn the_create_form_shows_errors_inline() {
        let mut m = Model::default();
        m.act(Action::OpenCreate);
        for c in "web".chars() {
            m.act(Action::Type(c));
        }
        m.act(Action::NextField);
        m.act(Action::NextField);
        m.act(Action::Type('0'));
        assert!(m.act(Action::Submit).is_empty(), "nothing is sent");
        insta::assert_snapshot!(screen(&m, 90, 24));
    }

    #[test]
    fn no_terminal_size_makes_drawing_panic() {
        let mut m = fleet();
        for mode in [Action::Help, Action::OpenCreate] {
            m.act(mode);
            for (w, h) in [
                (0, 0),
                (1, 1),
                (10, 3),
                (39, 11),
                (40, 12),
                (41, 13),
                (80, 12),
                (300, 100),
            ] {
                let _ = screen(&m, w, h);
            }
            m.act(Action::Cancel);
        }
        assert!(screen(&m, 20, 5).contains("terminal too small"));
    }

    #[test]
    fn the_help_popup_lists_the_keys() {
        let mut m = fleet();
        m.act(Action::Help);
        insta::assert_snapshot!(screen(&m, 80, 24));
    }

    #[test]
    fn a_narrow_terminal_shows_the_log_instead_of_the_details_on_l() {
        let mut m = fleet();
        let narrow = screen(&m, 80, 24);
        assert!(
            narrow.contains("details: web") && !narrow.contains("log: web"),
            "{narrow}"
        );
        m.act(Action::TogglePane);
        m.log_to_follow();
        m.apply(Msg::Logs {
            id: banger_proto::VmId::new("aaaa1111000000000000000000000000").unwrap(),
            from: None,
            result: Ok((
                "[    0.000000] Linux version\r\nWelcome to web\n".into(),
                44,
            )),
        });
        insta::assert_snapshot!(screen(&m, 80, 24));
    }

    #[test]
    fn exec_output_shows_the_status_and_delete_asks_first() {
        let mut m = fleet();
        m.act(Action::OpenExec);
        for c in "uname -a".chars() {
            m.act(Action::Type(c));
        }
        m.act(Action::Submit);
        assert!(screen(&m, 80, 24).contains("running…"));
        m.apply(Msg::ExecDone(Ok(banger_proto::agent::ExecResult {
            exit_code: Some(0),
            signal: None,
            timed_out: false,
            stdout: "Linux web 6.1.0\n".into(),
            stderr: String::new(),
        })));
        let s = screen(&m, 80, 24);
        assert!(
            s.contains("web$ uname -a") && s.contains("Linux web 6.1.0"),
            "{s}"
        );
        assert!(s.contains("[exit status 0]"), "{s}");
        m.act(Action::Cancel);
        m.act(Action::AskDelete);
        let s = screen(&m, 80, 24);
        assert!(s.contains("Delete web and everything it owns"), "{s}");
    }

    #[test]
    fn console_control_characters_are_not_drawn() {
        assert_eq!(printable("a\x1b[31mb\r\n\tc"), "a[31mb\n c");
    }
}
