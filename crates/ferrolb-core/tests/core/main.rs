//! Integration tests of the pure core, one module per area, in one test binary.

mod allocator_props;
mod allocator_vectors;
mod election_incremental;
mod election_k8s;
mod election_lease;
mod election_props;
mod election_reference;
mod election_vectors;
mod examples;
mod heartbeat_group;
mod membership_model;
mod wire_proptest;
mod wire_tshark;
mod wire_vectors;
