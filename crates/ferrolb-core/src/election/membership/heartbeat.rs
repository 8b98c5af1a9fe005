//! The heartbeat codec: wire format, authentication and anti-replay of one datagram.
//!
//! # Wire format (version 1, big endian)
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `FLHB` |
//! | 1 | version (1) |
//! | 1 | flags (bit 0: the sender may announce; informational) |
//! | 1 | length of the node name, 1..=253 |
//! | n | node name (UTF-8, the Kubernetes Node name) |
//! | 8 | incarnation: sender's wall clock at start, ms since the Unix epoch |
//! | 8 | sequence number, +1 per heartbeat of this incarnation |
//! | 8 | sender's wall clock when sent, ms since the Unix epoch |
//! | 32 | HMAC-SHA256 over everything before it, keyed by the shared Secret |
//!
//! A heartbeat is accepted only if it parses, its MAC verifies (constant-time compare), it
//! is not from this node, its send time is within [`MeshTiming::max_clock_skew`] of the
//! receiver's wall clock (old captures are useless), and its `(incarnation, sequence)` is
//! new: a higher incarnation restarts the sender's window, a lower one is stale unless the
//! known incarnation has been silent for longer than the skew bound (a sender whose clock
//! stepped back and restarted), and within an incarnation a 64-entry sliding window
//! rejects duplicates and anything older ([`ReplayWindow`]).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Magic bytes opening every heartbeat.
pub const MAGIC: &[u8; 4] = b"FLHB";
/// Wire format version.
pub const VERSION: u8 = 1;
/// Length of the MAC trailer.
pub const MAC_LEN: usize = 32;
/// Smallest possible heartbeat (one-byte name).
pub const MIN_LEN: usize = 4 + 1 + 1 + 1 + 1 + 24 + MAC_LEN;
/// Largest possible heartbeat (253-byte name).
pub const MAX_LEN: usize = 4 + 1 + 1 + 1 + 253 + 24 + MAC_LEN;
/// Shortest accepted key (bytes).
pub const MIN_KEY_LEN: usize = 16;
/// Flag: the sender may announce (it holds its quorum).
pub const FLAG_MAY_ANNOUNCE: u8 = 1;

/// A prepared HMAC-SHA256 key (RFC 2104, RustCrypto's `hmac`): the keyed state is computed
/// once, so each MAC costs a clone of it and two SHA-256 runs.
#[derive(Clone)]
pub struct HmacKey {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKey(..)")
    }
}

/// An unusable heartbeat key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Fewer than [`MIN_KEY_LEN`] bytes.
    #[error("heartbeat key has {0} bytes; at least {MIN_KEY_LEN} are required")]
    TooShort(usize),
}

impl HmacKey {
    /// Prepares `key` (at least [`MIN_KEY_LEN`] bytes; longer than 64 bytes is hashed first).
    pub fn new(key: &[u8]) -> Result<Self, KeyError> {
        if key.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort(key.len()));
        }
        Ok(Self::new_unchecked(key))
    }

    fn new_unchecked(key: &[u8]) -> Self {
        HmacKey {
            mac: <Hmac<Sha256> as Mac>::new_from_slice(key)
                .expect("HMAC accepts keys of any length"),
        }
    }

    /// HMAC-SHA256 of `msg`.
    pub fn mac(&self, msg: &[u8]) -> [u8; 32] {
        let mut m = self.mac.clone();
        m.update(msg);
        m.finalize().into_bytes().into()
    }

    /// Whether `tag` is the MAC of `msg`, compared in constant time (`subtle`, through
    /// `hmac`'s `verify_slice`).
    pub fn verify(&self, msg: &[u8], tag: &[u8]) -> bool {
        let mut m = self.mac.clone();
        m.update(msg);
        m.verify_slice(tag).is_ok()
    }
}

/// HMAC-SHA256 of `msg` under `key` (any length; test helper and reference).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    HmacKey::new_unchecked(key).mac(msg)
}

/// One heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// Sending node.
    pub node: String,
    /// Sender's start time (ms since the Unix epoch): a restarted sender has a higher one.
    pub incarnation: u64,
    /// +1 per heartbeat within the incarnation.
    pub seq: u64,
    /// Sender's wall clock at sending (ms since the Unix epoch).
    pub sent_unix_ms: u64,
    /// Flags ([`FLAG_MAY_ANNOUNCE`]).
    pub flags: u8,
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    /// Not a heartbeat: bad length, magic, version or name.
    Malformed,
    /// The MAC does not verify (wrong key, or tampered with).
    Forged,
    /// Too old (send time outside the skew bound, or an older incarnation / sequence
    /// than the window holds).
    Stale,
    /// Already accepted once.
    Replayed,
    /// From this node itself (a reflection).
    OwnNode,
}

impl Reject {
    /// Metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::Forged => "forged",
            Reject::Stale => "stale",
            Reject::Replayed => "replayed",
            Reject::OwnNode => "own",
        }
    }
}

impl Heartbeat {
    /// Serialises and signs. Names longer than 253 bytes (impossible for a Node name) are
    /// truncated at a character boundary.
    pub fn encode(&self, key: &HmacKey) -> Vec<u8> {
        let mut name = self.node.as_str();
        while name.len() > 253 {
            let mut end = 253;
            while !name.is_char_boundary(end) {
                end -= 1;
            }
            name = &name[..end];
        }
        let mut out = Vec::with_capacity(7 + name.len() + 24 + MAC_LEN);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(self.flags);
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&self.incarnation.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.sent_unix_ms.to_be_bytes());
        let mac = key.mac(&out);
        out.extend_from_slice(&mac);
        out
    }

    /// Parses and authenticates a datagram. Never panics.
    pub fn decode(buf: &[u8], key: &HmacKey) -> Result<Heartbeat, Reject> {
        if buf.len() < MIN_LEN || buf.len() > MAX_LEN {
            return Err(Reject::Malformed);
        }
        if &buf[..4] != MAGIC || buf[4] != VERSION {
            return Err(Reject::Malformed);
        }
        let flags = buf[5];
        let n = buf[6] as usize;
        if n == 0 || buf.len() != 7 + n + 24 + MAC_LEN {
            return Err(Reject::Malformed);
        }
        let (body, tag) = buf.split_at(buf.len() - MAC_LEN);
        if !key.verify(body, tag) {
            return Err(Reject::Forged);
        }
        let node = std::str::from_utf8(&body[7..7 + n]).map_err(|_| Reject::Malformed)?;
        let num = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&body[at..at + 8]);
            u64::from_be_bytes(b)
        };
        Ok(Heartbeat {
            node: node.to_string(),
            incarnation: num(7 + n),
            seq: num(7 + n + 8),
            sent_unix_ms: num(7 + n + 16),
            flags,
        })
    }
}

/// Anti-replay state for one sender: its incarnation and a 64-entry sliding window of
/// sequence numbers (as IPsec's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Incarnation the window belongs to.
    pub incarnation: u64,
    /// Highest accepted sequence number.
    pub top: u64,
    /// Bit `d` set: `top - d` was accepted.
    pub bits: u64,
}

impl ReplayWindow {
    /// The window after accepting the first heartbeat of a sender.
    pub fn first(incarnation: u64, seq: u64) -> Self {
        ReplayWindow {
            incarnation,
            top: seq,
            bits: 1,
        }
    }

    /// Accepts `(incarnation, seq)` once. `restart_ok`: a lower incarnation may replace
    /// the current one (the current one has been silent for longer than the skew bound).
    pub fn accept(&mut self, incarnation: u64, seq: u64, restart_ok: bool) -> Result<(), Reject> {
        if incarnation != self.incarnation {
            if incarnation > self.incarnation || restart_ok {
                *self = ReplayWindow::first(incarnation, seq);
                return Ok(());
            }
            return Err(Reject::Stale);
        }
        if seq > self.top {
            let shift = seq - self.top;
            self.bits = if shift >= 64 { 0 } else { self.bits << shift };
            self.bits |= 1;
            self.top = seq;
            return Ok(());
        }
        let d = self.top - seq;
        if d >= 64 {
            return Err(Reject::Stale);
        }
        if self.bits & (1 << d) != 0 {
            return Err(Reject::Replayed);
        }
        self.bits |= 1 << d;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn key() -> HmacKey {
        HmacKey::new(b"0123456789abcdef0123456789abcdef").unwrap()
    }

    pub(crate) fn hb(seq: u64) -> Heartbeat {
        Heartbeat {
            node: "node-2".into(),
            incarnation: 1_700_000_000_000,
            seq,
            sent_unix_ms: 1_700_000_000_500,
            flags: FLAG_MAY_ANNOUNCE,
        }
    }

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    #[test]
    fn hmac_rfc4231_vectors() {
        // Test case 1
        assert_eq!(
            hmac_sha256(&[0x0b; 20], b"Hi There").to_vec(),
            unhex("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        );
        // Test case 2
        assert_eq!(
            hmac_sha256(b"Jefe", b"what do ya want for nothing?").to_vec(),
            unhex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        // Test case 6: key longer than the block
        assert_eq!(
            hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )
            .to_vec(),
            unhex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
        );
    }

    #[test]
    fn short_keys_rejected() {
        assert_eq!(HmacKey::new(b"short").unwrap_err(), KeyError::TooShort(5));
    }

    #[test]
    fn roundtrip_and_size() {
        let b = hb(7).encode(&key());
        assert_eq!(b.len(), 7 + 6 + 24 + 32);
        assert_eq!(Heartbeat::decode(&b, &key()), Ok(hb(7)));
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let b = hb(7).encode(&key());
        for i in 0..b.len() {
            for bit in 0..8 {
                let mut c = b.clone();
                c[i] ^= 1 << bit;
                let r = Heartbeat::decode(&c, &key());
                assert!(
                    matches!(r, Err(Reject::Forged | Reject::Malformed)),
                    "byte {i} bit {bit}: {r:?}"
                );
            }
        }
    }

    #[test]
    fn wrong_key_is_forged_and_garbage_is_malformed() {
        let b = hb(1).encode(&key());
        let other = HmacKey::new(b"another key, also 32 bytes long!").unwrap();
        assert_eq!(Heartbeat::decode(&b, &other), Err(Reject::Forged));
        for bad in [&b[..0], &b[..10], &b[..b.len() - 1], b"FLHB\x02xxxxxxxx"] {
            assert_eq!(Heartbeat::decode(bad, &key()), Err(Reject::Malformed));
        }
        let mut long = b.clone();
        long.push(0);
        assert_eq!(Heartbeat::decode(&long, &key()), Err(Reject::Malformed));
        // zero-length name
        let mut z = b"FLHB\x01\x00\x00".to_vec();
        z.extend_from_slice(&[0; 24]);
        let mac = key().mac(&z);
        z.extend_from_slice(&mac);
        assert_eq!(Heartbeat::decode(&z, &key()), Err(Reject::Malformed));
        // invalid UTF-8 name with a valid MAC
        let mut u = b"FLHB\x01\x00\x01\xff".to_vec();
        u.extend_from_slice(&[0; 24]);
        let mac = key().mac(&u);
        u.extend_from_slice(&mac);
        assert_eq!(Heartbeat::decode(&u, &key()), Err(Reject::Malformed));
    }

    #[test]
    fn replay_window() {
        let mut w = ReplayWindow::first(5, 100);
        assert_eq!(w.accept(5, 100, false), Err(Reject::Replayed));
        assert_eq!(w.accept(5, 101, false), Ok(()));
        assert_eq!(w.accept(5, 99, false), Ok(())); // reordered, within the window
        assert_eq!(w.accept(5, 99, false), Err(Reject::Replayed));
        assert_eq!(w.accept(5, 200, false), Ok(()));
        assert_eq!(w.accept(5, 137, false), Ok(()));
        assert_eq!(w.accept(5, 136, false), Err(Reject::Stale)); // 64 behind
        assert_eq!(w.accept(5, 101, false), Err(Reject::Stale));
        // an older incarnation is stale unless the current one went silent long ago
        assert_eq!(w.accept(4, 1000, false), Err(Reject::Stale));
        assert_eq!(w.accept(4, 1000, true), Ok(()));
        assert_eq!(w.incarnation, 4);
        // a newer incarnation restarts the window
        assert_eq!(w.accept(6, 0, false), Ok(()));
        assert_eq!(w.accept(6, 0, false), Err(Reject::Replayed));
        assert_eq!(w.accept(6, 1, false), Ok(()));
    }
}
