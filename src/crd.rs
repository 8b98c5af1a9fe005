//! See lib.rs module table. (placeholder until its issue lands)
