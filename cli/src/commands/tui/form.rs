//! The create form: name, image, cpus, memory, disk. Each field is checked with the parsers
//! `banger vm create` uses for its flags (proto's validated types, [`units`]), so the form
//! refuses exactly what the command line refuses, with the same messages, and sends nothing
//! until every field is valid. Empty optional fields mean the controller's defaults.

use banger_proto::vm::CreateVmRequest;
use banger_proto::{ImageName, VmName};

use super::state::Action;
use crate::commands::vm::units;

/// The fields, in tab order.
pub(crate) const FIELDS: [Field; 5] = [
    Field::Name,
    Field::Image,
    Field::Cpus,
    Field::Memory,
    Field::Disk,
];

/// One field of the form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    /// The VM's name (required).
    Name,
    /// Image (default: the controller's).
    Image,
    /// vCPUs.
    Cpus,
    /// Memory size.
    Memory,
    /// Work disk size.
    Disk,
}

impl Field {
    /// The label shown before the input.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Image => "image",
            Self::Cpus => "cpus",
            Self::Memory => "memory",
            Self::Disk => "disk",
        }
    }

    /// What an empty field means.
    pub(crate) fn placeholder(self) -> &'static str {
        match self {
            Self::Name => "lowercase letters, digits, '-'",
            Self::Image => "default image",
            Self::Cpus => "default (1-32)",
            Self::Memory => "default (e.g. 512M, 2G)",
            Self::Disk => "image default (e.g. 8G)",
        }
    }
}

/// The form's state: one input and one error per field, and the focused field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CreateForm {
    /// Inputs, in [`FIELDS`] order.
    pub(crate) values: [String; 5],
    /// Errors of the last submit, in [`FIELDS`] order.
    pub(crate) errors: [Option<String>; 5],
    /// Index of the focused field.
    pub(crate) focus: usize,
}

impl CreateForm {
    /// Applies a key's action to the focused field.
    pub(crate) fn edit(&mut self, action: &Action) {
        match action {
            Action::Type(c) => {
                if let Some(v) = self.values.get_mut(self.focus) {
                    v.push(*c);
                }
            }
            Action::Erase => {
                if let Some(v) = self.values.get_mut(self.focus) {
                    v.pop();
                }
            }
            Action::NextField | Action::Down => self.focus = (self.focus + 1) % FIELDS.len(),
            Action::PrevField | Action::Up => {
                self.focus = (self.focus + FIELDS.len() - 1) % FIELDS.len();
            }
            _ => {}
        }
    }

    /// Validates every field: the request to send, or `None` with the errors filled in and
    /// the focus on the first bad field.
    pub(crate) fn submit(&mut self) -> Option<CreateVmRequest> {
        let [name, image, cpus, memory, disk] = &self.values;
        let name = name.trim().parse::<VmName>().map_err(|e| e.to_string());
        let image = optional(image, |s| s.parse::<ImageName>().map_err(|e| e.to_string()));
        let cpus = optional(cpus, units::parse_cpus);
        let memory = optional(memory, units::parse_memory);
        let disk = optional(disk, units::parse_disk);
        self.errors = [
            name.as_ref().err().cloned(),
            image.as_ref().err().cloned(),
            cpus.as_ref().err().cloned(),
            memory.as_ref().err().cloned(),
            disk.as_ref().err().cloned(),
        ];
        if let Some(first) = self.errors.iter().position(Option::is_some) {
            self.focus = first;
            return None;
        }
        Some(CreateVmRequest {
            name: name.ok()?,
            image: image.ok()?,
            cpus: cpus.ok()?,
            memory_mib: memory.ok()?,
            disk_mib: disk.ok()?,
            host: None,
            start: true,
            port_forwards: Vec::new(),
        })
    }
}

/// An empty field is `None` (the default); anything else must parse.
fn optional<T>(
    input: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, String> {
    let t = input.trim();
    if t.is_empty() {
        Ok(None)
    } else {
        parse(t).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(values: [&str; 5]) -> CreateForm {
        CreateForm {
            values: values.map(str::to_owned),
            ..CreateForm::default()
        }
    }

    #[test]
    fn a_valid_form_becomes_the_same_request_as_the_flags() {
        let req = form(["web", "", "2", "1G", "8G"]).submit().unwrap();
        assert_eq!(req.name.as_str(), "web");
        assert_eq!(req.cpus.map(banger_proto::CpuCount::get), Some(2));
        assert_eq!(req.memory_mib.map(banger_proto::MemMib::get), Some(1024));
        assert_eq!(req.disk_mib.map(banger_proto::MemMib::get), Some(8192));
        assert!(req.image.is_none() && req.start);
    }

    #[test]
    fn empty_optional_fields_leave_the_defaults_to_the_controller() {
        let req = form(["web", "", "", "", ""]).submit().unwrap();
        assert!(req.cpus.is_none() && req.memory_mib.is_none() && req.disk_mib.is_none());
    }

    #[test]
    fn zero_or_negative_cpus_and_memory_are_refused_inline() {
        for (values, field) in [
            (["web", "", "0", "", ""], 2),
            (["web", "", "-1", "", ""], 2),
            (["web", "", "", "0", ""], 3),
            (["web", "", "", "-2G", ""], 3),
            (["web", "", "", "", "0"], 4),
        ] {
            let mut f = form(values);
            assert!(f.submit().is_none(), "{values:?}");
            let err = f.errors[field].clone().unwrap_or_default();
            assert!(err.contains("greater than 0"), "{values:?}: {err}");
            assert_eq!(f.focus, field);
        }
    }

    #[test]
    fn the_form_says_what_the_command_line_says() {
        let mut f = form(["Web", "", "0", "", ""]);
        assert!(f.submit().is_none());
        assert_eq!(f.focus, 0, "the first bad field gets the focus");
        assert_eq!(
            f.errors[2].as_deref(),
            crate::commands::vm::units::parse_cpus("0").err().as_deref()
        );
        assert!(f.errors[0].is_some());
        let mut f = form(["", "", "", "", ""]);
        assert!(f.submit().is_none());
        assert!(f.errors[0].is_some(), "a name is required");
    }

    #[test]
    fn typing_goes_to_the_focused_field_and_tab_cycles() {
        let mut f = CreateForm::default();
        for c in "db".chars() {
            f.edit(&Action::Type(c));
        }
        f.edit(&Action::Erase);
        f.edit(&Action::NextField);
        f.edit(&Action::NextField);
        f.edit(&Action::Type('4'));
        f.edit(&Action::PrevField);
        f.edit(&Action::PrevField);
        f.edit(&Action::PrevField);
        assert_eq!(f.values[0], "d");
        assert_eq!(f.values[2], "4");
        assert_eq!(f.focus, FIELDS.len() - 1);
    }
}
