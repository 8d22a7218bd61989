//! Streaming detokenization: raw token bytes in, valid UTF-8 text out (../shared/docs/format.md §6.5).

/// Turns a stream of token pieces (raw bytes, see [`super::Tokenizer::token_to_piece`]) into
/// text. A token may end inside a UTF-8 character (CJK, emoji): `push` returns everything up
/// to the last complete character and keeps the incomplete tail for the next call. Bytes that
/// can never start or continue a valid character are replaced by U+FFFD at once (one U+FFFD
/// per maximal invalid sequence, as [`String::from_utf8_lossy`]).
#[derive(Clone, Debug, Default)]
pub struct Detokenizer {
    pending: Vec<u8>,
}

impl Detokenizer {
    /// An empty detokenizer.
    pub fn new() -> Detokenizer {
        Detokenizer::default()
    }

    /// Appends `bytes` and returns the text that is complete so far.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut done = 0;
        loop {
            let rest = &self.pending[done..];
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    done = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&rest[..valid]));
                    done += valid;
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            done += n;
                        }
                        // An incomplete character at the end: wait for more bytes.
                        None => break,
                    }
                }
            }
        }
        self.pending.drain(..done);
        out
    }

    /// The bytes held back (an incomplete character, at most 3 bytes).
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// Ends the stream: returns the held-back bytes, each incomplete character replaced by
    /// U+FFFD.
    pub fn finish(self) -> String {
        String::from_utf8_lossy(&self.pending).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_invalid_bytes() {
        let mut d = Detokenizer::new();
        let euro = "€".as_bytes(); // e2 82 ac
        assert_eq!(d.push(b"a"), "a");
        assert_eq!(d.push(&euro[..1]), "");
        assert_eq!(d.push(&euro[1..2]), "");
        assert_eq!(d.push(&euro[2..]), "€");
        // 0xff can never be valid: replaced immediately, the rest goes through.
        assert_eq!(d.push(b"\xffb"), "\u{FFFD}b");
        // A lead byte followed by a non-continuation byte.
        assert_eq!(d.push(b"\xe2x"), "\u{FFFD}x");
        assert_eq!(d.push(b"\xf0\x9f"), "");
        assert_eq!(d.pending(), b"\xf0\x9f");
        assert_eq!(d.finish(), "\u{FFFD}");
    }
}
