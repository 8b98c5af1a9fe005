//! Integration tests of the embedded API server, one module per area, in one test binary.

mod address_rules;
mod apiserver_api;
mod apiserver_auth;
mod apiserver_runtime;
mod crd_validation;
mod faults;
mod inflight;
mod paging;
mod support;
