//! VM id generation.

use banger_proto::VmId;

/// A new random VM id: a v4 UUID as 32 lowercase hex digits.
///
/// Random rather than time-ordered (v7): ids are shown and referred to by their first 12 digits
/// (tables, tap names), and v7 ids minted in the same millisecond share exactly those digits.
pub fn new_vm_id() -> VmId {
    let text = uuid::Uuid::new_v4().simple().to_string();
    match VmId::new(text) {
        Ok(id) => id,
        // A v4 UUID in simple form is always 32 lowercase hex digits.
        Err(e) => unreachable!("uuid simple form is a valid vm id: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_and_their_short_forms_differ() {
        let a = new_vm_id();
        let b = new_vm_id();
        assert_ne!(a.short(), b.short());
    }
}
