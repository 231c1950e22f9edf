//! Streaming UTF-8 decoding for command output.
//!
//! Output is read in chunks that may split a multi-byte character; decoding each chunk on its
//! own would turn the halves into two U+FFFD. [`Utf8Stream`] keeps the incomplete tail of one
//! chunk and prepends it to the next, and only replaces bytes that are really invalid.

/// A UTF-8 decoder that carries incomplete characters across chunks.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Decodes `bytes` after whatever was pending; an incomplete character at the end is kept
    /// for the next call.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(bytes);
        let mut out = String::with_capacity(buf.len());
        let mut rest = buf.as_slice();
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid_up_to` marks the end of a valid prefix, so this cannot fail.
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = after.get(n..).unwrap_or_default();
                        }
                        None => {
                            self.pending = after.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        out
    }

    /// Flushes what is pending at end of stream (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let pending = std::mem::take(&mut self.pending);
        String::from_utf8_lossy(&pending).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_across_chunks_survives() {
        let bytes = "héllo €".as_bytes();
        for split in 0..=bytes.len() {
            let mut d = Utf8Stream::default();
            let (a, b) = bytes.split_at(split);
            let mut s = d.push(a);
            s.push_str(&d.push(b));
            s.push_str(&d.finish());
            assert_eq!(s, "héllo €", "split at {split}");
        }
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut d = Utf8Stream::default();
        assert_eq!(d.push(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(d.push(b"\xe2\x82"), "");
        assert_eq!(d.finish(), "\u{fffd}");
    }
}
