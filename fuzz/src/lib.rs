//! The exact `ferrolb::wire` sources, compiled standalone for fuzzing.

#[path = "../../src/wire/mod.rs"]
pub mod wire;
