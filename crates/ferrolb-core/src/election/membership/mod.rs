//! Peer liveness from direct speaker-to-speaker heartbeats — the pure protocol core.
//!
//! Nothing here performs I/O: the speaker shell (`speaker::heartbeat`) owns the UDP socket,
//! passes received datagrams to [`PeerTable::receive`] with the current instants, and asks
//! [`MeshRules`] whether it may announce and which peers are alive.
//!
//! - [`heartbeat`]: the codec — wire format, HMAC-SHA256 authentication, anti-replay window;
//! - [`mesh`]: the rules — who has been heard, who is a member, who may announce;
//! - [`group`]: which heartbeats go to a multicast group, which by unicast;
//! - [`lease_watch`]: when the peers' node Leases need watching at all.

pub mod group;
pub mod heartbeat;
pub mod lease_watch;
pub mod mesh;

pub use group::*;
pub use heartbeat::*;
pub use lease_watch::*;
pub use mesh::*;
