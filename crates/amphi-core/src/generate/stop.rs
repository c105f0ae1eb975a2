//! Stop strings: generated text is held back while it could still be the start of a stop
//! string, and cut where one appears (the stop string itself is not returned, as in OpenAI's
//! API and Hugging Face's `stop_strings`).

#[derive(Debug, Clone, Default)]
pub(crate) struct StopStrings {
    stops: Vec<String>,
    /// Text generated but not yet released.
    held: String,
}

/// What [`StopStrings::push`] released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Released {
    /// Text to emit; generation goes on.
    Text(String),
    /// A stop string appeared: the text before it, and generation ends.
    Stopped(String),
}

impl StopStrings {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
        }
    }

    /// Adds newly decoded text.
    pub fn push(&mut self, text: &str) -> Released {
        self.held.push_str(text);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let out = self.held[..at].to_owned();
            self.held.clear();
            return Released::Stopped(out);
        }
        // Keep the longest tail that is a proper prefix of some stop string.
        let keep = self
            .stops
            .iter()
            .map(|s| {
                (1..s.len().min(self.held.len() + 1))
                    .rev()
                    .find(|&n| {
                        s.is_char_boundary(n)
                            && self.held.is_char_boundary(self.held.len() - n)
                            && self.held.ends_with(&s[..n])
                    })
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        let release = self.held.len() - keep;
        let out = self.held[..release].to_owned();
        self.held.drain(..release);
        Released::Text(out)
    }

    /// The text still held when generation ends for another reason.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_prefixes_and_cuts_at_a_stop() {
        let mut s = StopStrings::new(vec!["\nUser:".into(), "END".into()]);
        assert_eq!(s.push("Hello"), Released::Text("Hello".into()));
        assert_eq!(s.push(" there\nUs"), Released::Text(" there".into()));
        assert_eq!(s.push("ually"), Released::Text("\nUsually".into()));
        assert_eq!(s.push(" E"), Released::Text(" ".into()));
        assert_eq!(s.push("NDING"), Released::Stopped("".into()));
        let mut s = StopStrings::new(vec!["é!".into()]);
        assert_eq!(s.push("café"), Released::Text("caf".into()));
        assert_eq!(s.finish(), "é");
        let mut none = StopStrings::new(vec![]);
        assert_eq!(none.push("x"), Released::Text("x".into()));
    }
}
