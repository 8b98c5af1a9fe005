//! The exact `ferrolb::wire` sources, compiled standalone for fuzzing.

#[path = "../../crates/ferrolb-core/src/wire/mod.rs"]
pub mod wire;
