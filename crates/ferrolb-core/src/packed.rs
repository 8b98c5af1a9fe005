//! Several strings in one allocation, for tables held by the thousand: each string as
//! `<length in bytes, decimal>:<text>`, one after the other. An entry of a few short strings
//! then costs one allocation instead of one per string (and per vector holding them); a
//! reader walks the text ([`Unpack`]). Every slice taken falls on a character boundary, so
//! no text is checked again.

use std::fmt::Write;

/// Appends `s` to `text`.
pub fn push(text: &mut String, s: &str) {
    write!(text, "{}:{s}", s.len()).expect("writing to a String");
}

/// Appends the number `n` to `text` (read back with [`Unpack::number`]).
pub fn push_number(text: &mut String, n: usize) {
    push(text, &n.to_string());
}

/// The strings of a packed text, in order.
#[derive(Clone, Debug)]
pub struct Unpack<'a>(&'a str);

impl<'a> Unpack<'a> {
    /// Reads `text`, made with [`push`].
    pub fn new(text: &'a str) -> Self {
        Unpack(text)
    }

    /// The next string, read as a number written by [`push_number`] (0 when absent).
    pub fn number(&mut self) -> usize {
        self.next().and_then(|n| n.parse().ok()).unwrap_or(0)
    }
}

impl<'a> Iterator for Unpack<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let text: &'a str = self.0;
        let (len, rest) = text.split_once(':')?;
        let len: usize = len.parse().ok()?;
        let s = rest.get(..len)?;
        self.0 = &rest[len..];
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Whatever the strings (digits, the separator, empty, several bytes a character),
        /// they come back as pushed.
        #[test]
        fn strings_come_back_as_pushed(
            strs in proptest::collection::vec("[a1:0é/ ]{0,5}", 0..6),
            n in 0usize..100_000,
        ) {
            let mut text = String::new();
            for s in &strs {
                push(&mut text, s);
            }
            push_number(&mut text, n);
            let mut it = Unpack::new(&text);
            let back: Vec<&str> = it.by_ref().take(strs.len()).collect();
            proptest::prop_assert_eq!(back, strs.iter().map(String::as_str).collect::<Vec<_>>());
            proptest::prop_assert_eq!(it.number(), n);
            proptest::prop_assert_eq!(it.next(), None);
        }
    }
}
