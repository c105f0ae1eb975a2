//! Tokenization with the `tokenizers` crate, with padding and truncation decided by the engine.
//!
//! Packaged `tokenizer.json` files often carry fixed padding and truncation (all-MiniLM-L6-v2's
//! pads every input to 128 tokens). Those settings are switched off at load; the engine pads each
//! batch to its longest sequence and truncates to the model's maximum length itself.

use serde::{Deserialize, Serialize};
use tokenizers::{Encoding, TruncationDirection, TruncationParams, TruncationStrategy};

use tokenizers::processors::PostProcessorWrapper;

use crate::backend::BatchShape;
use crate::error::{Error, Result};
use crate::models::EncoderInput;

pub(crate) const TOKENIZER_FILE: &str = "tokenizer.json";

/// One text input: a single text or a sentence pair (`text_pair` gets token type 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TextInput {
    /// A single text.
    Text(String),
    /// A pair of texts, as in `{"text": "...", "text_pair": "..."}`.
    Pair {
        /// First segment.
        text: String,
        /// Second segment.
        text_pair: String,
    },
}

impl From<&str> for TextInput {
    fn from(text: &str) -> Self {
        TextInput::Text(text.to_owned())
    }
}

impl From<String> for TextInput {
    fn from(text: String) -> Self {
        TextInput::Text(text)
    }
}

impl TextInput {
    fn len(&self) -> usize {
        match self {
            TextInput::Text(t) => t.len(),
            TextInput::Pair { text, text_pair } => text.len() + text_pair.len(),
        }
    }
}

/// A loaded tokenizer with its padding and truncation switched off.
#[derive(Debug)]
pub(crate) struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    /// `tokenizer.json`'s post-processor, taken out of `inner` so that it runs exactly once,
    /// after the engine's truncation (as transformers runs it): left inside, it would run on
    /// each segment's encoding too, and RoBERTa's and byte-level processors would trim the
    /// leading `Ġ` from offsets twice.
    processor: Option<PostProcessorWrapper>,
    pad_id: u32,
}

/// A tokenized batch: per-text encodings (unpadded) and the padded encoder input.
#[derive(Debug)]
pub(crate) struct TokenizedBatch {
    pub encodings: Vec<Encoding>,
    pub input: EncoderInput,
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer {
        message: e.to_string(),
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json`. Padded positions get `pad_id`, else the tokenizer's `[PAD]`, else 0
    /// (they are masked, so the choice only matters for bit-compatibility with references).
    pub fn from_bytes(bytes: &[u8], pad_id: Option<u32>) -> Result<Self> {
        let invalid = |message: String| Error::InvalidJson {
            file: TOKENIZER_FILE.to_owned(),
            message,
        };
        // tokenizers 0.23 panics (`expect("Helper")` in its decoder's deserializer) when the
        // JSON is malformed inside `decoder`; a syntax pass first, which allocates nothing,
        // turns every such file into a typed error before tokenizers sees it.
        serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
            .map_err(|e| invalid(e.to_string()))?;
        let mut inner =
            tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| invalid(e.to_string()))?;
        inner.with_padding(None);
        inner.with_truncation(None).map_err(tok_err)?;
        let pad_id = pad_id.or_else(|| inner.token_to_id("[PAD]")).unwrap_or(0);
        let processor = inner.get_post_processor().cloned();
        inner.with_post_processor(None::<PostProcessorWrapper>);
        Ok(Self {
            inner,
            processor,
            pad_id,
        })
    }

    /// The id of the unknown token (`[UNK]` for WordPiece vocabularies), if any.
    pub fn unk_id(&self) -> Option<u32> {
        self.inner
            .token_to_id("[UNK]")
            .or_else(|| self.inner.token_to_id("<unk>"))
    }

    /// Number of special tokens the post-processor adds (`[CLS] A [SEP]` = 2, pairs = 3).
    pub fn added_tokens(&self, pair: bool) -> usize {
        self.processor.as_ref().map_or(0, |p| {
            use tokenizers::PostProcessor;
            p.added_tokens(pair)
        })
    }

    /// Encodes one input with special tokens and character offsets, truncated to `max_length`
    /// tokens (special tokens included), longest segment first, like Hugging Face.
    pub fn encode(&self, input: &TextInput, max_length: usize) -> Result<Encoding> {
        let (first, second) = match input {
            TextInput::Text(t) => (t.as_str(), None),
            TextInput::Pair { text, text_pair } => (text.as_str(), Some(text_pair.as_str())),
        };
        let a = self
            .inner
            .encode_char_offsets(first, false)
            .map_err(tok_err)?;
        let b = second
            .map(|t| self.inner.encode_char_offsets(t, false))
            .transpose()
            .map_err(tok_err)?;
        let added = self.added_tokens(b.is_some());
        if max_length <= added {
            return Err(Error::invalid_input(format!(
                "max_length {max_length} leaves no room for content after {added} special tokens"
            )));
        }
        let params = TruncationParams {
            max_length: max_length - added,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        };
        let (a, b) = tokenizers::truncate_encodings(a, b, &params).map_err(tok_err)?;
        self.post_process(a, b, true)
    }

    /// Runs the post-processor (special tokens, type ids, offset trimming) on encoded segments.
    fn post_process(
        &self,
        a: Encoding,
        b: Option<Encoding>,
        add_special_tokens: bool,
    ) -> Result<Encoding> {
        match &self.processor {
            Some(p) => {
                use tokenizers::PostProcessor;
                p.process(a, b, add_special_tokens)
            }
            None => self.inner.post_process(a, b, add_special_tokens),
        }
        .map_err(tok_err)
    }

    /// Encodes a batch and pads it on the right to its longest sequence.
    pub fn encode_batch(
        &self,
        inputs: &[TextInput],
        max_length: usize,
        max_input_bytes: usize,
    ) -> Result<TokenizedBatch> {
        if inputs.is_empty() {
            return Err(Error::invalid_input("no inputs given"));
        }
        if let Some((i, input)) = inputs
            .iter()
            .enumerate()
            .find(|(_, t)| t.len() > max_input_bytes)
        {
            return Err(Error::InputTooLarge {
                message: format!(
                    "input {i} is {} bytes, the limit is {max_input_bytes}",
                    input.len()
                ),
            });
        }
        // One input is one op: the host may stop the call between two of them.
        let encodings = inputs
            .iter()
            .map(|input| {
                crate::interrupt::check()?;
                self.encode(input, max_length)
            })
            .collect::<Result<Vec<_>>>()?;
        let seq = encodings.iter().map(Encoding::len).max().unwrap_or(0);
        let batch = encodings.len();
        let mut ids = Vec::with_capacity(batch * seq);
        let mut type_ids = Vec::with_capacity(batch * seq);
        let mut mask = Vec::with_capacity(batch * seq);
        for enc in &encodings {
            let pad = seq - enc.len();
            ids.extend_from_slice(enc.get_ids());
            ids.extend(std::iter::repeat_n(self.pad_id, pad));
            type_ids.extend_from_slice(enc.get_type_ids());
            type_ids.extend(std::iter::repeat_n(0, pad));
            mask.extend(std::iter::repeat_n(1, enc.len()));
            mask.extend(std::iter::repeat_n(0, pad));
        }
        Ok(TokenizedBatch {
            encodings,
            input: EncoderInput {
                ids,
                type_ids,
                mask,
                shape: BatchShape { batch, seq },
            },
        })
    }

    /// Encodes a prompt for generation: the whole text, untruncated, with the
    /// post-processor's special tokens when `add_special_tokens` (Llama's BOS).
    pub fn encode_prompt(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let a = self.inner.encode(text, false).map_err(tok_err)?;
        Ok(self
            .post_process(a, None, add_special_tokens)?
            .get_ids()
            .to_vec())
    }

    /// Decodes ids to text with the tokenizer's decoder.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner.decode(ids, skip_special_tokens).map_err(tok_err)
    }

    /// The id of a token (special or not), if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Joins word pieces back into text with the tokenizer's decoder (`hell ##o` → `hello`).
    pub fn join_tokens(&self, tokens: &[String]) -> Result<String> {
        match self.inner.get_decoder() {
            Some(decoder) => {
                use tokenizers::Decoder;
                decoder.decode(tokens.to_vec()).map_err(tok_err)
            }
            None => Ok(tokens.join(" ")),
        }
    }
}

/// One encoded input with everything a reference comparison needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Encoded {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Token strings.
    pub tokens: Vec<String>,
    /// Token type (segment) ids.
    pub type_ids: Vec<u32>,
    /// `[start, end)` in characters of the original text (of `text_pair` for its tokens).
    pub offsets_char: Vec<(usize, usize)>,
    /// 1 for special tokens.
    pub special_tokens_mask: Vec<u32>,
    /// Index of the pre-tokenized word each token comes from.
    pub word_ids: Vec<Option<u32>>,
}

impl From<Encoding> for Encoded {
    fn from(e: Encoding) -> Self {
        Self {
            ids: e.get_ids().to_vec(),
            tokens: e.get_tokens().to_vec(),
            type_ids: e.get_type_ids().to_vec(),
            offsets_char: e.get_offsets().to_vec(),
            special_tokens_mask: e.get_special_tokens_mask().to_vec(),
            word_ids: e.get_word_ids().to_vec(),
        }
    }
}

/// A `tokenizer.json` loaded the way pipelines load it: its own padding and truncation off.
#[derive(Debug)]
pub struct Tokenizer(TextTokenizer);

impl Tokenizer {
    /// Parses `tokenizer.json`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        TextTokenizer::from_bytes(bytes, None).map(Self)
    }

    /// Encodes with special tokens, truncating to `max_length` tokens.
    pub fn encode(&self, input: &TextInput, max_length: usize) -> Result<Encoded> {
        self.0.encode(input, max_length).map(Encoded::from)
    }

    /// Encodes a single text without special tokens and without truncation.
    pub fn encode_plain(&self, text: &str) -> Result<Encoded> {
        let raw = self
            .0
            .inner
            .encode_char_offsets(text, false)
            .map_err(tok_err)?;
        self.0.post_process(raw, None, false).map(Encoded::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `tokenizer.json` cut inside its `decoder`: tokenizers itself panics on it, amphi
    /// answers a typed error.
    #[test]
    fn malformed_decoder_is_a_typed_error() {
        let cut = br###"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
            "normalizer":null,"pre_tokenizer":null,"post_processor":null,
            "decoder":{"type":"WordPiece","prefix":"##","cleanup":tr"###;
        let upstream = std::panic::catch_unwind(|| tokenizers::Tokenizer::from_bytes(cut));
        assert!(
            upstream.is_err(),
            "tokenizers no longer panics here: the syntax pass in from_bytes may be dropped"
        );
        let err = TextTokenizer::from_bytes(cut, None).expect_err("cut JSON loads");
        assert!(
            matches!(err, Error::InvalidJson { ref file, .. } if file == TOKENIZER_FILE),
            "{err:?}"
        );
    }
}
