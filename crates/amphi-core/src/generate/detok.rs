//! Incremental detokenization: text as tokens arrive, never half a UTF-8 character or a
//! word-piece that the next token would change. As text-generation-inference does it: decode
//! the tokens since a prefix offset with and without the newest ones, and emit the
//! difference once it is longer and does not end in U+FFFD (an incomplete byte sequence of
//! byte-level BPE).

use crate::error::Result;
use crate::tokenizer::TextTokenizer;

#[derive(Debug, Clone, Default)]
pub(crate) struct Detokenizer {
    ids: Vec<u32>,
    /// Where the decode window starts (a few tokens back, so that merges and spaces across
    /// the boundary decode as in the whole text).
    prefix: usize,
    /// Tokens already turned into emitted text.
    read: usize,
}

impl Detokenizer {
    /// Adds a token; returns the text it completes (possibly empty).
    pub fn push(&mut self, tok: &TextTokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let before = tok.decode(&self.ids[self.prefix..self.read], true)?;
        let now = tok.decode(&self.ids[self.prefix..], true)?;
        match now.get(before.len()..) {
            Some(delta) if !delta.is_empty() && !now.ends_with('\u{FFFD}') => {
                let delta = delta.to_owned();
                self.prefix = self.read;
                self.read = self.ids.len();
                Ok(delta)
            }
            _ => Ok(String::new()),
        }
    }

    /// What is left when generation ends (an incomplete character as U+FFFD, as a whole
    /// decode writes it).
    pub fn finish(&mut self, tok: &TextTokenizer) -> Result<String> {
        let before = tok.decode(&self.ids[self.prefix..self.read], true)?;
        let now = tok.decode(&self.ids[self.prefix..], true)?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        Ok(now.get(before.len()..).unwrap_or_default().to_owned())
    }
}
