//! The TUI's model and its reducer: everything the screen shows, changed only by [`Model::apply`]
//! (things that happened: events, list snapshots, answers, connection changes) and
//! [`Model::act`] (what the user asked for). Both return the [`Effect`]s to carry out; nothing
//! here touches the bus or the terminal, so every rule is unit-tested.
//!
//! Ordering: a controller numbers its events with one increasing sequence per host, and every
//! event carries the VM's full record. A row remembers the last sequence applied; an event with
//! a sequence at or below it is stale (delivered late or twice) and ignored. A `vm.list`
//! snapshot carries no sequence, so rows and snapshots are compared by the record's
//! `updated_at_ms`: the newer record wins. A `deleted` event removes the row and leaves a
//! tombstone, so a late event or a snapshot taken before the delete cannot bring it back.

use std::collections::{BTreeMap, HashSet};

use banger_proto::agent::{ExecResult, Health};
use banger_proto::event::{EventKind, VmEvent};
use banger_proto::subject::VmOp;
use banger_proto::vm::{CreateVmRequest, VmInfo, VmState};
use banger_proto::{HostId, VmId};

use super::form::CreateForm;

/// How many events the details pane keeps per VM.
pub(crate) const EVENTS_KEPT: usize = 8;
/// How much of a VM's log the logs pane keeps, in bytes.
pub(crate) const LOG_KEPT: usize = 64 * 1024;

/// The bus connection as the TUI last heard of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Connection {
    /// Connected; the table is live.
    Connected,
    /// The connection dropped; async-nats is reconnecting. The table may be out of date.
    Disconnected,
}

/// What the guest agent last said about a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HealthView {
    /// Not asked yet, or the VM does not run.
    Unknown,
    /// The agent answered.
    Healthy {
        /// Agent version.
        agent: String,
    },
    /// The agent answered with another status, or did not answer.
    Unhealthy(String),
}

impl HealthView {
    /// The table cell.
    pub(crate) fn cell(&self) -> &str {
        match self {
            Self::Unknown => "-",
            Self::Healthy { .. } => "ok",
            Self::Unhealthy(_) => "down",
        }
    }
}

/// One line of a VM's recent history, for the details pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventLine {
    /// When, milliseconds since the epoch.
    pub(crate) at_ms: u64,
    /// What happened.
    pub(crate) kind: EventKind,
    /// The state after it.
    pub(crate) state: VmState,
}

/// One VM of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    /// The latest record.
    pub(crate) vm: VmInfo,
    /// The sequence number of the last event applied to this row.
    pub(crate) last_seq: Option<u64>,
    /// Agent health.
    pub(crate) health: HealthView,
    /// Recent events, newest first.
    pub(crate) events: Vec<EventLine>,
}

/// The bottom pane shown when the terminal is too narrow for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pane {
    /// Config, volumes, network, last events.
    Details,
    /// The VM's serial console.
    Logs,
}

/// What has the keyboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The table.
    Normal,
    /// The key list.
    Help,
    /// `delete NAME? y/n`.
    ConfirmDelete(VmInfo),
    /// The create form.
    Create(CreateForm),
    /// The exec prompt.
    ExecPrompt {
        /// Where to run it.
        vm: VmInfo,
        /// The command line typed so far.
        input: String,
        /// Why the last submit was refused.
        error: Option<String>,
    },
    /// An exec's output (or `running…` until it comes).
    ExecOutput {
        /// `NAME$ COMMAND`.
        title: String,
        /// The output, or `None` while the command runs.
        text: Option<String>,
        /// Lines scrolled down.
        scroll: u16,
    },
}

/// A line at the bottom: what the last action did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    /// The text.
    pub(crate) text: String,
    /// Whether it reports a failure (shown in red).
    pub(crate) error: bool,
}

/// What the user asked for, from [`super::keys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Leave the TUI.
    Quit,
    /// Select the row above.
    Up,
    /// Select the row below.
    Down,
    /// Start, stop or restart the selected VM.
    Lifecycle(VmOp),
    /// Ask to delete the selected VM.
    AskDelete,
    /// Delete it (answer to the confirmation).
    ConfirmDelete,
    /// Open the create form.
    OpenCreate,
    /// Open the exec prompt.
    OpenExec,
    /// ssh into the selected VM.
    Ssh,
    /// Switch the narrow-screen pane between details and logs.
    TogglePane,
    /// Show the key list.
    Help,
    /// Close a popup, form or prompt without doing anything.
    Cancel,
    /// A character typed into a form or prompt.
    Type(char),
    /// Backspace in a form or prompt.
    Erase,
    /// Next form field.
    NextField,
    /// Previous form field.
    PrevField,
    /// Submit a form or prompt.
    Submit,
    /// Scroll a popup.
    ScrollUp,
    /// Scroll a popup.
    ScrollDown,
}

/// Something that happened, for [`Model::apply`].
#[derive(Debug, Clone)]
pub(crate) enum Msg {
    /// A lifecycle event from the bus.
    Event(VmEvent),
    /// A `vm.list` of every host.
    Snapshot {
        /// The VMs of the hosts that answered.
        vms: Vec<VmInfo>,
        /// Hosts that were found but did not answer; their rows are kept as they were.
        unreachable: Vec<String>,
        /// When the list was asked for: rows changed after that are newer than the list.
        requested_at_ms: u64,
    },
    /// The list could not be had.
    SnapshotFailed(String),
    /// The bus connection changed.
    Connection(Connection),
    /// A health answer.
    Health {
        /// The VM.
        id: VmId,
        /// The agent's answer, or why there is none.
        result: Result<Health, String>,
    },
    /// A lifecycle operation finished.
    OpDone {
        /// What to say.
        text: String,
        /// Whether it failed.
        failed: bool,
        /// The VM after it, when the controller returned it.
        vm: Option<VmInfo>,
    },
    /// An exec finished.
    ExecDone(Result<ExecResult, String>),
    /// A window of a VM's log.
    Logs {
        /// The VM.
        id: VmId,
        /// The offset the window was read from (`None`: the tail).
        from: Option<u64>,
        /// The text and the next offset, or why there is none.
        result: Result<(String, u64), String>,
    },
    /// An ssh session ended.
    SshDone {
        /// The reminder to show when the VM still runs.
        reminder: Option<String>,
        /// Why the session could not run.
        error: Option<String>,
    },
}

/// Work for [`super::actions`] to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Ask every host for its VMs again.
    Resync,
    /// Ask again after a pause: the last list failed.
    RetryResync,
    /// Ask a VM's agent for its health; `until_healthy` keeps asking for a while (a VM that
    /// just started needs a moment for its agent).
    ProbeHealth {
        /// The VM.
        vm: VmInfo,
        /// Keep asking until the agent answers `ok` or a deadline passes.
        until_healthy: bool,
    },
    /// start, stop, restart or delete.
    Lifecycle(VmInfo, VmOp),
    /// Create a VM.
    Create(CreateVmRequest),
    /// Run a command in a VM.
    Exec(VmInfo, Vec<String>),
    /// Suspend the TUI and ssh into a VM.
    Ssh(VmInfo),
}

/// Everything on screen.
#[derive(Debug, Clone)]
pub(crate) struct Model {
    /// Rows by VM id.
    pub(crate) rows: BTreeMap<VmId, Row>,
    /// VMs deleted (by event) while the TUI watched: never shown again.
    tombstones: HashSet<VmId>,
    /// The selected VM.
    pub(crate) selected: Option<VmId>,
    /// The bus connection.
    pub(crate) connection: Connection,
    /// Hosts that did not answer the last list.
    pub(crate) unreachable: Vec<String>,
    /// Whether the first list arrived.
    pub(crate) loaded: bool,
    /// What has the keyboard.
    pub(crate) mode: Mode,
    /// The narrow-screen pane.
    pub(crate) pane: Pane,
    /// The last action's outcome.
    pub(crate) status: Option<Status>,
    /// The followed log: VM, text, next offset.
    pub(crate) log: Option<(VmId, String, Option<u64>)>,
    /// Set by [`Action::Quit`].
    pub(crate) quit: bool,
    /// The local stack runs VMs under the simulator: the title line says so.
    pub(crate) simulated: bool,
    /// Lists asked for and not answered yet: a failed list is retried only when no other is
    /// on its way, so a flapping connection does not pile up retries.
    lists_in_flight: u32,
}

impl Default for Model {
    fn default() -> Self {
        Self {
            rows: BTreeMap::new(),
            tombstones: HashSet::new(),
            selected: None,
            connection: Connection::Connected,
            unreachable: Vec::new(),
            loaded: false,
            mode: Mode::Normal,
            pane: Pane::Details,
            status: None,
            log: None,
            quit: false,
            simulated: false,
            lists_in_flight: 0,
        }
    }
}

impl Model {
    /// The first thing to do: list the VMs.
    pub(crate) fn start(&mut self) -> Vec<Effect> {
        self.resync()
    }

    fn resync(&mut self) -> Vec<Effect> {
        self.lists_in_flight += 1;
        vec![Effect::Resync]
    }

    /// The rows in table order: by host, then name.
    pub(crate) fn ordered(&self) -> Vec<&Row> {
        let mut rows: Vec<&Row> = self.rows.values().collect();
        rows.sort_by(|a, b| {
            (&a.vm.host, &a.vm.name, &a.vm.id).cmp(&(&b.vm.host, &b.vm.name, &b.vm.id))
        });
        rows
    }

    /// The selected row, if any.
    pub(crate) fn selected_row(&self) -> Option<&Row> {
        self.selected.as_ref().and_then(|id| self.rows.get(id))
    }

    /// The selected row's position in table order.
    pub(crate) fn selected_index(&self) -> Option<usize> {
        let id = self.selected.as_ref()?;
        self.ordered().iter().position(|r| &r.vm.id == id)
    }

    /// Keeps a selection while there are rows: the same VM when it is still there, else the
    /// row at the position it had (`fallback`), else the first.
    fn fix_selection(&mut self, fallback: Option<usize>) {
        if self
            .selected
            .as_ref()
            .is_some_and(|id| self.rows.contains_key(id))
        {
            return;
        }
        let ordered = self.ordered();
        let pick = fallback
            .map(|i| i.min(ordered.len().saturating_sub(1)))
            .and_then(|i| ordered.get(i))
            .or_else(|| ordered.first())
            .map(|r| r.vm.id.clone());
        self.selected = pick;
    }

    fn say(&mut self, text: impl Into<String>, error: bool) {
        self.status = Some(Status {
            text: text.into(),
            error,
        });
    }

    /// Applies something that happened.
    pub(crate) fn apply(&mut self, msg: Msg) -> Vec<Effect> {
        match msg {
            Msg::Event(e) => self.apply_event(e),
            Msg::Snapshot {
                vms,
                unreachable,
                requested_at_ms,
            } => {
                self.lists_in_flight = self.lists_in_flight.saturating_sub(1);
                self.apply_snapshot(vms, unreachable, requested_at_ms)
            }
            Msg::SnapshotFailed(why) => {
                self.lists_in_flight = self.lists_in_flight.saturating_sub(1);
                self.say(format!("listing VMs failed: {why}; trying again"), true);
                if self.lists_in_flight == 0 {
                    self.lists_in_flight += 1;
                    vec![Effect::RetryResync]
                } else {
                    Vec::new()
                }
            }
            Msg::Connection(c) => {
                let was = self.connection;
                self.connection = c;
                match (was, c) {
                    (Connection::Disconnected, Connection::Connected) => {
                        self.say("reconnected: listing VMs again", false);
                        self.resync()
                    }
                    _ => Vec::new(),
                }
            }
            Msg::Health { id, result } => {
                if let Some(row) = self.rows.get_mut(&id) {
                    row.health = match result {
                        Ok(h) if h.status == "ok" => HealthView::Healthy {
                            agent: h.agent_version,
                        },
                        Ok(h) => HealthView::Unhealthy(format!("agent reports {:?}", h.status)),
                        // A VM that stopped meanwhile has no health to speak of.
                        Err(_) if row.vm.state != VmState::Running => HealthView::Unknown,
                        Err(e) => HealthView::Unhealthy(e),
                    };
                }
                Vec::new()
            }
            Msg::OpDone { text, failed, vm } => {
                self.say(text, failed);
                // The reply is the record right after the operation: as good as an event,
                // should the event be slow.
                if let Some(vm) = vm {
                    self.upsert_record(vm);
                    self.fix_selection(None);
                }
                Vec::new()
            }
            Msg::ExecDone(result) => {
                if let Mode::ExecOutput { text, .. } = &mut self.mode {
                    *text = Some(match result {
                        Ok(r) => exec_text(&r),
                        Err(e) => format!("exec failed: {e}"),
                    });
                }
                Vec::new()
            }
            Msg::Logs { id, from, result } => {
                let Some((log_id, text, next)) = &mut self.log else {
                    return Vec::new();
                };
                // An answer for another VM, or for an offset we have moved past, is old.
                if *log_id != id || *next != from {
                    return Vec::new();
                }
                match result {
                    Ok((data, offset)) => {
                        text.push_str(&data);
                        if text.len() > LOG_KEPT {
                            let mut cut = text.len() - LOG_KEPT;
                            while !text.is_char_boundary(cut) {
                                cut += 1;
                            }
                            text.drain(..cut);
                        }
                        *next = Some(offset);
                    }
                    Err(e) => self.say(format!("reading the log: {e}"), true),
                }
                Vec::new()
            }
            Msg::SshDone { reminder, error } => {
                match (error, reminder) {
                    (Some(e), _) => self.say(e, true),
                    (None, Some(r)) => self.say(r, false),
                    (None, None) => self.say("ssh session ended", false),
                }
                // Events waited while the session had the terminal; a long session may have
                // outlasted the subscription's buffer: list again rather than trust it.
                self.resync()
            }
        }
    }

    fn apply_event(&mut self, e: VmEvent) -> Vec<Effect> {
        let id = e.vm.id.clone();
        if self.tombstones.contains(&id) {
            return Vec::new();
        }
        if let Some(row) = self.rows.get(&id) {
            let stale_seq = row.vm.host == e.vm.host && row.last_seq.is_some_and(|s| e.seq <= s);
            if stale_seq || e.vm.updated_at_ms < row.vm.updated_at_ms {
                return Vec::new();
            }
        }
        if e.kind == EventKind::Deleted {
            let index = self.selected_index();
            self.rows.remove(&id);
            self.tombstones.insert(id.clone());
            if self.log.as_ref().is_some_and(|(l, _, _)| *l == id) {
                self.log = None;
            }
            self.fix_selection(index);
            return Vec::new();
        }
        let line = EventLine {
            at_ms: e.at_ms,
            kind: e.kind,
            state: e.vm.state,
        };
        let running = e.vm.state == VmState::Running;
        let row = self.rows.entry(id).or_insert_with(|| Row {
            vm: e.vm.clone(),
            last_seq: None,
            health: HealthView::Unknown,
            events: Vec::new(),
        });
        row.vm = e.vm;
        row.last_seq = Some(e.seq);
        row.events.insert(0, line);
        row.events.truncate(EVENTS_KEPT);
        if !running {
            row.health = HealthView::Unknown;
        }
        let vm = row.vm.clone();
        self.fix_selection(None);
        // The health event says that health changed, not to what: ask.
        match e.kind {
            EventKind::Started => vec![Effect::ProbeHealth {
                vm,
                until_healthy: true,
            }],
            EventKind::Health if running => vec![Effect::ProbeHealth {
                vm,
                until_healthy: false,
            }],
            _ => Vec::new(),
        }
    }

    /// Puts a record in its row when it is at least as new as the row's.
    fn upsert_record(&mut self, vm: VmInfo) -> bool {
        if self.tombstones.contains(&vm.id) {
            return false;
        }
        match self.rows.get_mut(&vm.id) {
            Some(row) if row.vm.updated_at_ms > vm.updated_at_ms => false,
            Some(row) => {
                if vm.state != VmState::Running {
                    row.health = HealthView::Unknown;
                }
                row.vm = vm;
                true
            }
            None => {
                self.rows.insert(
                    vm.id.clone(),
                    Row {
                        vm,
                        last_seq: None,
                        health: HealthView::Unknown,
                        events: Vec::new(),
                    },
                );
                true
            }
        }
    }

    fn apply_snapshot(
        &mut self,
        vms: Vec<VmInfo>,
        unreachable: Vec<String>,
        requested_at_ms: u64,
    ) -> Vec<Effect> {
        let index = self.selected_index();
        let listed: HashSet<VmId> = vms.iter().map(|v| v.id.clone()).collect();
        let unreachable_hosts: HashSet<&str> = unreachable.iter().map(String::as_str).collect();
        // Rows the list does not have are gone, unless their host did not answer or the row
        // changed after the list was asked for (an event that overtook the answer).
        self.rows.retain(|id, row| {
            listed.contains(id)
                || unreachable_hosts.contains(row.vm.host.as_str())
                || row.vm.updated_at_ms > requested_at_ms
        });
        let mut effects = Vec::new();
        for vm in vms {
            let was_unknown = self
                .rows
                .get(&vm.id)
                .is_none_or(|r| r.health == HealthView::Unknown);
            let running = vm.state == VmState::Running;
            if self.upsert_record(vm.clone()) && running && was_unknown {
                effects.push(Effect::ProbeHealth {
                    vm,
                    until_healthy: false,
                });
            }
        }
        self.unreachable = unreachable;
        self.loaded = true;
        self.fix_selection(index);
        effects
    }

    /// Applies what the user asked for.
    pub(crate) fn act(&mut self, action: Action) -> Vec<Effect> {
        // Ctrl-C leaves from anywhere, even a form.
        if action == Action::Quit {
            self.quit = true;
            return Vec::new();
        }
        let mode = std::mem::replace(&mut self.mode, Mode::Normal);
        let (mode, effects) = match mode {
            Mode::Normal => self.act_normal(action),
            Mode::Help => (Mode::Normal, Vec::new()),
            Mode::ConfirmDelete(vm) => match action {
                Action::ConfirmDelete => {
                    self.say(format!("deleting {}…", vm.name), false);
                    (Mode::Normal, vec![Effect::Lifecycle(vm, VmOp::Delete)])
                }
                _ => (Mode::Normal, Vec::new()),
            },
            Mode::Create(mut form) => match action {
                Action::Cancel => (Mode::Normal, Vec::new()),
                Action::Submit => match form.submit() {
                    Some(req) => {
                        self.say(format!("creating {}…", req.name), false);
                        (Mode::Normal, vec![Effect::Create(req)])
                    }
                    None => (Mode::Create(form), Vec::new()),
                },
                other => {
                    form.edit(&other);
                    (Mode::Create(form), Vec::new())
                }
            },
            Mode::ExecPrompt {
                vm,
                mut input,
                mut error,
            } => match action {
                Action::Cancel => (Mode::Normal, Vec::new()),
                Action::Submit => match exec_argv(&input) {
                    Ok(argv) => (
                        Mode::ExecOutput {
                            title: format!("{}$ {input}", vm.name),
                            text: None,
                            scroll: 0,
                        },
                        vec![Effect::Exec(vm, argv)],
                    ),
                    Err(e) => {
                        error = Some(e);
                        (Mode::ExecPrompt { vm, input, error }, Vec::new())
                    }
                },
                Action::Type(c) => {
                    input.push(c);
                    (Mode::ExecPrompt { vm, input, error }, Vec::new())
                }
                Action::Erase => {
                    input.pop();
                    (Mode::ExecPrompt { vm, input, error }, Vec::new())
                }
                _ => (Mode::ExecPrompt { vm, input, error }, Vec::new()),
            },
            Mode::ExecOutput {
                title,
                text,
                scroll,
            } => match action {
                Action::ScrollDown => (
                    Mode::ExecOutput {
                        title,
                        text,
                        scroll: scroll.saturating_add(1),
                    },
                    Vec::new(),
                ),
                Action::ScrollUp => (
                    Mode::ExecOutput {
                        title,
                        text,
                        scroll: scroll.saturating_sub(1),
                    },
                    Vec::new(),
                ),
                _ => (Mode::Normal, Vec::new()),
            },
        };
        self.mode = mode;
        effects
    }

    fn act_normal(&mut self, action: Action) -> (Mode, Vec<Effect>) {
        let selected = self.selected_row().map(|r| r.vm.clone());
        let nothing = (Mode::Normal, Vec::new());
        match action {
            Action::Quit | Action::Cancel => {
                self.quit = true;
                nothing
            }
            Action::Up | Action::Down => {
                let ordered = self.ordered();
                let len = ordered.len();
                if len > 0 {
                    let i = self.selected_index().unwrap_or(0);
                    let next = if action == Action::Up {
                        i.saturating_sub(1)
                    } else {
                        (i + 1).min(len - 1)
                    };
                    self.selected = ordered.get(next).map(|r| r.vm.id.clone());
                }
                nothing
            }
            Action::Help => (Mode::Help, Vec::new()),
            Action::TogglePane => {
                self.pane = match self.pane {
                    Pane::Details => Pane::Logs,
                    Pane::Logs => Pane::Details,
                };
                nothing
            }
            Action::OpenCreate => (Mode::Create(CreateForm::default()), Vec::new()),
            Action::Lifecycle(op) => match selected {
                Some(vm) => {
                    self.say(format!("{} {}…", op_verb(op), vm.name), false);
                    (Mode::Normal, vec![Effect::Lifecycle(vm, op)])
                }
                None => {
                    self.say("no VM selected", true);
                    nothing
                }
            },
            Action::AskDelete => match selected {
                Some(vm) => (Mode::ConfirmDelete(vm), Vec::new()),
                None => {
                    self.say("no VM selected", true);
                    nothing
                }
            },
            Action::OpenExec => match selected {
                Some(vm) => (
                    Mode::ExecPrompt {
                        vm,
                        input: String::new(),
                        error: None,
                    },
                    Vec::new(),
                ),
                None => {
                    self.say("no VM selected", true);
                    nothing
                }
            },
            Action::Ssh => match selected {
                Some(vm) => (Mode::Normal, vec![Effect::Ssh(vm)]),
                None => {
                    self.say("no VM selected", true);
                    nothing
                }
            },
            _ => nothing,
        }
    }

    /// The log to follow now: the selected VM's, from where the last read ended (`None`: its
    /// tail). Switching the selection starts over.
    pub(crate) fn log_to_follow(&mut self) -> Option<(VmInfo, Option<u64>)> {
        let vm = self.selected_row()?.vm.clone();
        match &self.log {
            Some((id, _, next)) if *id == vm.id => Some((vm, *next)),
            _ => {
                self.log = Some((vm.id.clone(), String::new(), None));
                Some((vm, None))
            }
        }
    }

    /// Rows by host, for the title: `(hosts, vms)`.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let hosts: HashSet<&HostId> = self.rows.values().map(|r| &r.vm.host).collect();
        (hosts.len(), self.rows.len())
    }

    /// Health answers by VM, for tests.
    #[cfg(test)]
    pub(crate) fn health_of(&self, name: &str) -> Option<&HealthView> {
        self.rows
            .values()
            .find(|r| r.vm.name.as_str() == name)
            .map(|r| &r.health)
    }
}

/// `starting`, `stopping`, ... for the status line.
fn op_verb(op: VmOp) -> &'static str {
    match op {
        VmOp::Start => "starting",
        VmOp::Stop => "stopping",
        VmOp::Restart => "restarting",
        VmOp::Delete => "deleting",
        VmOp::Kill => "killing",
        _ => "asking",
    }
}

/// Splits an exec prompt into argv the way a shell would split plain words; quotes group words.
/// The command runs without a shell, as `banger vm exec` runs it.
pub(crate) fn exec_argv(input: &str) -> Result<Vec<String>, String> {
    let mut argv = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in input.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    argv.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("unclosed quote".into());
    }
    if in_word {
        argv.push(word);
    }
    if argv.is_empty() {
        return Err("type a command to run, e.g. uname -a".into());
    }
    Ok(argv)
}

/// An exec result as the popup shows it: the output, then how it ended.
fn exec_text(r: &ExecResult) -> String {
    let mut text = r.stdout.clone();
    if !r.stderr.is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&r.stderr);
    }
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    let end = if r.timed_out {
        "[killed: ran past its timeout]".to_owned()
    } else {
        match (r.exit_code, r.signal) {
            (Some(c), _) => format!("[exit status {c}]"),
            (None, Some(s)) => format!("[killed by signal {s}]"),
            (None, None) => "[ended]".to_owned(),
        }
    };
    text.push_str(&end);
    text
}

/// The table's uptime cell: how long a running VM has run.
pub(crate) fn uptime(vm: &VmInfo, now_ms: u64) -> String {
    match (vm.state, vm.started_at_ms) {
        (VmState::Running, Some(t)) => crate::commands::vm::units::age(t, now_ms),
        _ => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use banger_proto::testing::vm_info;

    use super::*;

    const A: &str = "aaaa1111000000000000000000000000";
    const B: &str = "bbbb2222000000000000000000000000";

    fn vm(name: &str, id: &str, state: VmState, updated: u64) -> VmInfo {
        let mut v = vm_info(name, id, "h1");
        v.state = state;
        v.updated_at_ms = updated;
        v
    }

    fn event(kind: EventKind, seq: u64, v: VmInfo) -> Msg {
        Msg::Event(VmEvent {
            kind,
            at_ms: v.updated_at_ms,
            seq,
            vm: v,
        })
    }

    fn snapshot(vms: Vec<VmInfo>, at: u64) -> Msg {
        Msg::Snapshot {
            vms,
            unreachable: vec![],
            requested_at_ms: at,
        }
    }

    fn state_of(m: &Model, name: &str) -> Option<VmState> {
        m.rows
            .values()
            .find(|r| r.vm.name.as_str() == name)
            .map(|r| r.vm.state)
    }

    #[test]
    fn events_in_order_move_the_row_through_its_states() {
        let mut m = Model::default();
        m.apply(event(
            EventKind::Created,
            1,
            vm("web", A, VmState::Creating, 10),
        ));
        m.apply(event(
            EventKind::Starting,
            2,
            vm("web", A, VmState::Starting, 11),
        ));
        let fx = m.apply(event(
            EventKind::Started,
            3,
            vm("web", A, VmState::Running, 12),
        ));
        assert_eq!(state_of(&m, "web"), Some(VmState::Running));
        assert!(matches!(
            fx.as_slice(),
            [Effect::ProbeHealth {
                until_healthy: true,
                ..
            }]
        ));
        let row = m.ordered()[0].clone();
        let kinds: Vec<EventKind> = row.events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [EventKind::Started, EventKind::Starting, EventKind::Created]
        );
        assert_eq!(m.selected.as_ref().map(VmId::as_str), Some(A));
    }

    #[test]
    fn a_late_event_with_an_older_sequence_is_ignored() {
        let mut m = Model::default();
        m.apply(event(
            EventKind::Stopped,
            7,
            vm("web", A, VmState::Stopped, 20),
        ));
        // `started` (seq 5) was delivered after `stopped` (seq 7).
        m.apply(event(
            EventKind::Started,
            5,
            vm("web", A, VmState::Running, 15),
        ));
        assert_eq!(state_of(&m, "web"), Some(VmState::Stopped));
        // The same event twice changes nothing either.
        m.apply(event(
            EventKind::Stopped,
            7,
            vm("web", A, VmState::Stopped, 20),
        ));
        assert_eq!(m.ordered()[0].events.len(), 1);
    }

    #[test]
    fn an_event_older_than_the_listed_record_is_ignored() {
        let mut m = Model::default();
        m.apply(snapshot(vec![vm("web", A, VmState::Stopped, 50)], 60));
        m.apply(event(
            EventKind::Started,
            3,
            vm("web", A, VmState::Running, 40),
        ));
        assert_eq!(state_of(&m, "web"), Some(VmState::Stopped));
        m.apply(event(
            EventKind::Starting,
            4,
            vm("web", A, VmState::Starting, 70),
        ));
        assert_eq!(state_of(&m, "web"), Some(VmState::Starting));
    }

    #[test]
    fn deleted_removes_the_row_and_nothing_late_brings_it_back() {
        let mut m = Model::default();
        m.apply(snapshot(
            vec![
                vm("web", A, VmState::Stopped, 10),
                vm("db", B, VmState::Running, 10),
            ],
            20,
        ));
        m.selected = Some(VmId::new(A).unwrap());
        m.apply(event(
            EventKind::Deleted,
            9,
            vm("web", A, VmState::Deleting, 30),
        ));
        assert_eq!(state_of(&m, "web"), None);
        // The selection moves to the row that remains.
        assert_eq!(m.selected.as_ref().map(VmId::as_str), Some(B));
        // A `stopped` published before the delete but delivered after it, and a list taken
        // before the delete, do not resurrect it.
        m.apply(event(
            EventKind::Stopped,
            8,
            vm("web", A, VmState::Stopped, 25),
        ));
        m.apply(snapshot(vec![vm("web", A, VmState::Stopped, 10)], 5));
        assert_eq!(state_of(&m, "web"), None);
    }

    #[test]
    fn a_snapshot_removes_vanished_rows_but_keeps_newer_ones_and_unreachable_hosts() {
        let mut m = Model::default();
        let mut far = vm("far", B, VmState::Running, 10);
        far.host = HostId::new("h2").unwrap();
        m.apply(snapshot(vec![vm("old", A, VmState::Running, 10), far], 20));
        // Created after the resync was asked for: the list cannot know it yet.
        m.apply(event(
            EventKind::Created,
            1,
            vm(
                "new",
                "cccc0000000000000000000000000000",
                VmState::Creating,
                150,
            ),
        ));
        m.apply(Msg::Snapshot {
            vms: vec![],
            unreachable: vec!["h2".into()],
            requested_at_ms: 100,
        });
        assert_eq!(state_of(&m, "old"), None);
        assert_eq!(state_of(&m, "far"), Some(VmState::Running));
        assert_eq!(state_of(&m, "new"), Some(VmState::Creating));
        assert_eq!(m.unreachable, ["h2"]);
    }

    #[test]
    fn reconnecting_asks_for_the_list_again() {
        let mut m = Model::default();
        assert!(m.apply(Msg::Connection(Connection::Connected)).is_empty());
        assert!(
            m.apply(Msg::Connection(Connection::Disconnected))
                .is_empty()
        );
        assert_eq!(m.connection, Connection::Disconnected);
        assert_eq!(
            m.apply(Msg::Connection(Connection::Connected)),
            [Effect::Resync]
        );
        assert_eq!(m.connection, Connection::Connected);
    }

    #[test]
    fn a_failed_list_is_retried_once_not_once_per_failure() {
        let mut m = Model::default();
        assert_eq!(m.start(), [Effect::Resync]);
        m.apply(Msg::Connection(Connection::Disconnected));
        // A reconnect while the first list is still out: a second list.
        assert_eq!(
            m.apply(Msg::Connection(Connection::Connected)),
            [Effect::Resync]
        );
        // The first fails while the second is out: no retry yet.
        assert!(m.apply(Msg::SnapshotFailed("timeout".into())).is_empty());
        // The second fails too: one retry.
        assert_eq!(
            m.apply(Msg::SnapshotFailed("timeout".into())),
            [Effect::RetryResync]
        );
        assert!(m.status.as_ref().is_some_and(|s| s.error));
        assert!(!m.loaded);
        m.apply(snapshot(vec![vm("web", A, VmState::Running, 1)], 2));
        assert!(m.loaded);
    }

    #[test]
    fn health_answers_fill_the_health_column_and_a_stop_clears_it() {
        let mut m = Model::default();
        let fx = m.apply(snapshot(vec![vm("web", A, VmState::Running, 10)], 20));
        assert!(matches!(
            fx.as_slice(),
            [Effect::ProbeHealth {
                until_healthy: false,
                ..
            }]
        ));
        let id = VmId::new(A).unwrap();
        let mut h = Health {
            status: "ok".into(),
            uptime_secs: 1.0,
            hostname: "web".into(),
            agent_version: "1.2.3".into(),
            boot_id: "b".into(),
            load: [0.0; 3],
            mem_total_bytes: 1,
            mem_available_bytes: 1,
            rootfs_total_bytes: 1,
            rootfs_free_bytes: 1,
        };
        m.apply(Msg::Health {
            id: id.clone(),
            result: Ok(h.clone()),
        });
        assert_eq!(m.health_of("web").map(HealthView::cell), Some("ok"));
        h.status = "degraded".into();
        m.apply(Msg::Health {
            id: id.clone(),
            result: Ok(h),
        });
        assert_eq!(m.health_of("web").map(HealthView::cell), Some("down"));
        // A health event on a running VM asks again.
        let fx = m.apply(event(
            EventKind::Health,
            4,
            vm("web", A, VmState::Running, 30),
        ));
        assert!(matches!(
            fx.as_slice(),
            [Effect::ProbeHealth {
                until_healthy: false,
                ..
            }]
        ));
        m.apply(event(
            EventKind::Stopped,
            5,
            vm("web", A, VmState::Stopped, 40),
        ));
        assert_eq!(m.health_of("web"), Some(&HealthView::Unknown));
        // A late failed probe of a stopped VM is not "down".
        m.apply(Msg::Health {
            id,
            result: Err("conflict".into()),
        });
        assert_eq!(m.health_of("web"), Some(&HealthView::Unknown));
    }

    #[test]
    fn lifecycle_keys_act_on_the_selected_vm_and_delete_asks_first() {
        let mut m = Model::default();
        assert!(m.act(Action::Lifecycle(VmOp::Stop)).is_empty());
        assert!(m.status.as_ref().is_some_and(|s| s.error));
        m.apply(snapshot(
            vec![
                vm("a", A, VmState::Running, 1),
                vm("b", B, VmState::Running, 1),
            ],
            2,
        ));
        m.act(Action::Down);
        let fx = m.act(Action::Lifecycle(VmOp::Stop));
        assert!(matches!(&fx[..], [Effect::Lifecycle(v, VmOp::Stop)] if v.name.as_str() == "b"));
        assert!(m.act(Action::AskDelete).is_empty());
        assert!(matches!(m.mode, Mode::ConfirmDelete(_)));
        // Anything but yes cancels.
        assert!(m.act(Action::Cancel).is_empty());
        assert_eq!(m.mode, Mode::Normal);
        assert!(!m.quit);
        m.act(Action::AskDelete);
        let fx = m.act(Action::ConfirmDelete);
        assert!(matches!(&fx[..], [Effect::Lifecycle(v, VmOp::Delete)] if v.name.as_str() == "b"));
        let fx = m.apply(Msg::SshDone {
            reminder: Some("b is still running".into()),
            error: None,
        });
        assert_eq!(fx, [Effect::Resync], "a list after the TUI was away");
        assert_eq!(
            m.status.as_ref().map(|s| s.text.as_str()),
            Some("b is still running")
        );
        m.act(Action::Quit);
        assert!(m.quit);
    }

    #[test]
    fn exec_prompts_split_words_and_refuse_empty_commands() {
        assert_eq!(exec_argv("uname -a").unwrap(), ["uname", "-a"]);
        assert_eq!(
            exec_argv("sh -c 'echo hi; exit 3'").unwrap(),
            ["sh", "-c", "echo hi; exit 3"]
        );
        assert_eq!(exec_argv("echo \"\"").unwrap(), ["echo", ""]);
        assert!(exec_argv("   ").is_err());
        assert!(exec_argv("echo 'oops").is_err());
        let mut m = Model::default();
        m.apply(snapshot(vec![vm("a", A, VmState::Running, 1)], 2));
        m.act(Action::OpenExec);
        assert!(m.act(Action::Submit).is_empty());
        assert!(matches!(&m.mode, Mode::ExecPrompt { error: Some(_), .. }));
        for c in "echo hi".chars() {
            m.act(Action::Type(c));
        }
        let fx = m.act(Action::Submit);
        assert!(matches!(&fx[..], [Effect::Exec(_, argv)] if argv == &["echo", "hi"]));
        m.apply(Msg::ExecDone(Ok(ExecResult {
            exit_code: Some(0),
            signal: None,
            timed_out: false,
            stdout: "hi\n".into(),
            stderr: String::new(),
        })));
        assert!(
            matches!(&m.mode, Mode::ExecOutput { text: Some(t), .. } if t == "hi\n[exit status 0]")
        );
    }

    #[test]
    fn log_windows_append_in_order_and_old_answers_are_dropped() {
        let mut m = Model::default();
        m.apply(snapshot(vec![vm("a", A, VmState::Running, 1)], 2));
        let id = VmId::new(A).unwrap();
        assert_eq!(m.log_to_follow().map(|(_, o)| o), Some(None));
        m.apply(Msg::Logs {
            id: id.clone(),
            from: None,
            result: Ok(("boot\n".into(), 5)),
        });
        assert_eq!(m.log_to_follow().map(|(_, o)| o), Some(Some(5)));
        // An answer for an offset already read is a repeat.
        m.apply(Msg::Logs {
            id: id.clone(),
            from: None,
            result: Ok(("boot\n".into(), 5)),
        });
        m.apply(Msg::Logs {
            id,
            from: Some(5),
            result: Ok(("login:".into(), 11)),
        });
        assert_eq!(
            m.log.as_ref().map(|(_, t, _)| t.as_str()),
            Some("boot\nlogin:")
        );
    }
}
