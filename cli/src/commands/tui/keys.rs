//! Keys to actions. What a key means depends on what has the keyboard: in the table `d` asks to
//! delete, in the create form it is a letter of the name. [`KEYS`] is the list the help popup
//! and the README show.

use banger_proto::subject::VmOp;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::state::{Action, Mode};

/// The table's keys and what they do, for the help popup and the bottom line.
pub(crate) const KEYS: &[(&str, &str)] = &[
    ("↑/↓ j/k", "select a VM"),
    ("s", "start"),
    ("x", "stop"),
    ("r", "restart"),
    ("d", "delete (asks first)"),
    ("c", "create a VM (form)"),
    ("e", "exec a command"),
    ("Enter", "ssh into the VM"),
    ("l", "details / logs (narrow screens)"),
    ("?", "this help"),
    ("q Esc", "quit"),
];

/// What `key` does in `mode`; `None` for keys that do nothing there.
pub(crate) fn action(mode: &Mode, key: KeyEvent) -> Option<Action> {
    // Key releases and repeats (terminals that report them) are not presses.
    if key.kind == KeyEventKind::Release {
        return None;
    }
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return Some(Action::Quit);
    }
    match mode {
        Mode::Normal => normal(key.code),
        Mode::Help => Some(Action::Cancel),
        Mode::ConfirmDelete(_) => Some(match key.code {
            KeyCode::Char('y' | 'Y') => Action::ConfirmDelete,
            _ => Action::Cancel,
        }),
        Mode::Create(_) => match key.code {
            KeyCode::Esc => Some(Action::Cancel),
            KeyCode::Enter => Some(Action::Submit),
            KeyCode::Tab | KeyCode::Down => Some(Action::NextField),
            KeyCode::BackTab | KeyCode::Up => Some(Action::PrevField),
            KeyCode::Backspace => Some(Action::Erase),
            KeyCode::Char(c) => Some(Action::Type(c)),
            _ => None,
        },
        Mode::ExecPrompt { .. } => match key.code {
            KeyCode::Esc => Some(Action::Cancel),
            KeyCode::Enter => Some(Action::Submit),
            KeyCode::Backspace => Some(Action::Erase),
            KeyCode::Char(c) => Some(Action::Type(c)),
            _ => None,
        },
        Mode::ExecOutput { .. } => match key.code {
            KeyCode::Up | KeyCode::Char('k') => Some(Action::ScrollUp),
            KeyCode::Down | KeyCode::Char('j') => Some(Action::ScrollDown),
            _ => Some(Action::Cancel),
        },
    }
}

fn normal(code: KeyCode) -> Option<Action> {
    Some(match code {
        KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
        KeyCode::Up | KeyCode::Char('k') => Action::Up,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::Char('s') => Action::Lifecycle(VmOp::Start),
        KeyCode::Char('x') => Action::Lifecycle(VmOp::Stop),
        KeyCode::Char('r') => Action::Lifecycle(VmOp::Restart),
        KeyCode::Char('d') => Action::AskDelete,
        KeyCode::Char('c') => Action::OpenCreate,
        KeyCode::Char('e') => Action::OpenExec,
        KeyCode::Enter => Action::Ssh,
        KeyCode::Char('l') | KeyCode::Tab => Action::TogglePane,
        KeyCode::Char('?') => Action::Help,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::tui::form::CreateForm;

    fn press(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn table_keys_name_lifecycle_actions() {
        let m = Mode::Normal;
        assert_eq!(
            action(&m, press(KeyCode::Char('s'))),
            Some(Action::Lifecycle(VmOp::Start))
        );
        assert_eq!(
            action(&m, press(KeyCode::Char('x'))),
            Some(Action::Lifecycle(VmOp::Stop))
        );
        assert_eq!(
            action(&m, press(KeyCode::Char('r'))),
            Some(Action::Lifecycle(VmOp::Restart))
        );
        assert_eq!(
            action(&m, press(KeyCode::Char('d'))),
            Some(Action::AskDelete)
        );
        assert_eq!(action(&m, press(KeyCode::Enter)), Some(Action::Ssh));
        assert_eq!(action(&m, press(KeyCode::Char('q'))), Some(Action::Quit));
        assert_eq!(action(&m, press(KeyCode::Esc)), Some(Action::Quit));
        assert_eq!(action(&m, press(KeyCode::Char('z'))), None);
    }

    #[test]
    fn in_the_form_letters_are_text_and_esc_only_closes_it() {
        let m = Mode::Create(CreateForm::default());
        assert_eq!(
            action(&m, press(KeyCode::Char('d'))),
            Some(Action::Type('d'))
        );
        assert_eq!(
            action(&m, press(KeyCode::Char('q'))),
            Some(Action::Type('q'))
        );
        assert_eq!(action(&m, press(KeyCode::Esc)), Some(Action::Cancel));
        assert_eq!(action(&m, press(KeyCode::Tab)), Some(Action::NextField));
        assert_eq!(action(&m, press(KeyCode::Enter)), Some(Action::Submit));
    }

    #[test]
    fn only_y_confirms_a_delete() {
        let vm = banger_proto::testing::vm_info("web", "aaaa1111000000000000000000000000", "h1");
        let m = Mode::ConfirmDelete(vm);
        assert_eq!(
            action(&m, press(KeyCode::Char('y'))),
            Some(Action::ConfirmDelete)
        );
        for other in [KeyCode::Char('n'), KeyCode::Enter, KeyCode::Esc] {
            assert_eq!(action(&m, press(other)), Some(Action::Cancel));
        }
    }

    #[test]
    fn ctrl_c_quits_from_anywhere_and_releases_are_ignored() {
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(
            action(&Mode::Create(CreateForm::default()), ctrl_c),
            Some(Action::Quit)
        );
        let mut release = press(KeyCode::Char('s'));
        release.kind = KeyEventKind::Release;
        assert_eq!(action(&Mode::Normal, release), None);
    }
}
