//! Whisper's text side: GPT-2 byte-level BPE tokens back to text.
//!
//! `vocabulary.txt` lists one token per line, in the id order, spelled with GPT-2's
//! byte-to-unicode mapping (every byte is a printable character). Decoding maps each character
//! back to its byte and reads the bytes as UTF-8. Special tokens (id >= end of text) are dropped.

use std::path::Path;

/// `<|endoftext|>`: the first special token; every id from here on is not text.
pub const END_OF_TEXT: u32 = 50256;
pub const START_OF_TRANSCRIPT: u32 = 50257;
pub const NO_TIMESTAMPS: u32 = 50362;

#[derive(Debug)]
pub struct Tokenizer {
    tokens: Vec<String>,
    /// Unicode scalar (from GPT-2's mapping) -> byte.
    byte_of: std::collections::HashMap<char, u8>,
}

impl Tokenizer {
    pub fn from_file(path: &Path) -> std::io::Result<Tokenizer> {
        let text = std::fs::read_to_string(path)?;
        Ok(Tokenizer::new(text.lines().map(String::from).collect()))
    }

    pub fn new(tokens: Vec<String>) -> Tokenizer {
        Tokenizer { tokens, byte_of: byte_decoder() }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The text of a token sequence; unknown ids and special tokens are skipped, invalid UTF-8
    /// becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            if id >= END_OF_TEXT {
                continue;
            }
            if let Some(tok) = self.tokens.get(id as usize) {
                bytes.extend(tok.chars().filter_map(|c| self.byte_of.get(&c).copied()));
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// GPT-2's `bytes_to_unicode`, inverted: printable Latin-1 bytes stand for themselves, the
/// others are shifted to U+0100 and up in byte order.
fn byte_decoder() -> std::collections::HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut map = std::collections::HashMap::with_capacity(256);
    let mut shifted = 0u32;
    for b in 0..=255u8 {
        let c = if printable(b) {
            char::from(b)
        } else {
            shifted += 1;
            char::from_u32(255 + shifted).unwrap_or(char::REPLACEMENT_CHARACTER)
        };
        map.insert(c, b);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_tokens_decode_to_text() {
        // "Ġ" is the space byte, "Ã©" the two UTF-8 bytes of "é"
        let t = Tokenizer::new(vec!["Hello".into(), "Ġcaf".into(), "Ã©".into(), "!".into()]);
        assert_eq!(t.decode(&[0, 1, 2, 3, END_OF_TEXT, 999_999]), "Hello café!");
    }

    #[test]
    fn every_byte_has_a_distinct_character() {
        let m = byte_decoder();
        assert_eq!(m.len(), 256);
        assert_eq!(m.get(&'Ġ'), Some(&b' '));
        assert_eq!(m.get(&'Ċ'), Some(&b'\n'));
    }
}
