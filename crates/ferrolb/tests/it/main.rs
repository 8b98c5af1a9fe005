//! Integration and end-to-end tests of the ferrolb crate and binary, one module per area, in
//! one test binary (one link instead of one per file).

mod controller_e2e;
mod controller_fake;
mod controller_leader;
mod crds;
mod dataplane_kernel;
mod deploy;
mod e2e;
mod explain_e2e;
mod image;
mod l2status_owner;
mod logging;
mod monitoring;
mod rbac_e2e;
mod speaker_loop;
mod validate_cli;
