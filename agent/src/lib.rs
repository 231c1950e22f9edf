//! The banger guest agent (filled in by its own change): health and exec over vsock.
