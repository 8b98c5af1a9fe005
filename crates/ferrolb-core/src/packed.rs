//! Several strings in one allocation, for tables held by the thousand: each string as
//! `<length in bytes, decimal>:<text>`, one after the other. An entry of a few short strings
//! then costs one allocation instead of one per string (and per vector holding them); a
//! reader walks the text ([`Unpack`]). Every slice taken falls on a character boundary, so
//! no text is checked again.

/// Appends `s` to `text`.
pub fn push(text: &mut String, s: &str) {
    // the length in decimal, without the formatting machinery (a table of ten thousand
    // objects is packed at start-up)
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = s.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    text.reserve(digits.len() - at + 1 + s.len());
    text.push_str(std::str::from_utf8(&digits[at..]).expect("ASCII digits"));
    text.push(':');
    text.push_str(s);
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

/// A list of strings in one allocation (none when empty).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Strings(Option<Box<str>>);

impl Strings {
    /// The strings, in order.
    pub fn iter(&self) -> Unpack<'_> {
        Unpack::new(self.0.as_deref().unwrap_or(""))
    }

    /// How many strings.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// No string.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

impl<S: AsRef<str>> FromIterator<S> for Strings {
    fn from_iter<I: IntoIterator<Item = S>>(strs: I) -> Self {
        let mut text = String::new();
        let mut any = false;
        for s in strs {
            push(&mut text, s.as_ref());
            any = true;
        }
        Strings(any.then(|| text.into_boxed_str()))
    }
}

impl std::fmt::Debug for Strings {
    /// As the list it holds.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
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
            strs in proptest::collection::vec("[a1:0é/ ]{0,5}|[a1:0é/ ]{9,120}", 0..6),
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
            let list: Strings = strs.iter().collect();
            proptest::prop_assert!(list.iter().eq(strs.iter().map(String::as_str)));
            proptest::prop_assert_eq!(list.len(), strs.len());
            proptest::prop_assert_eq!(list.is_empty(), strs.is_empty());
            proptest::prop_assert_eq!(format!("{list:?}"), format!("{strs:?}"));
        }
    }
}
