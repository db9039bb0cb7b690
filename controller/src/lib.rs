//! The Portico controller: turns Ingress, HTTPRoute and their annotations
//! into the dataplane's routing model, and tells users what it could not
//! accept.
//!
//! Data flow: `source` (watch caches or a manifest directory) → `snapshot` →
//! `translate` (pure) → the dataplane's atomic publish (`reconcile`), with
//! diagnostics → `status` (Events and status, leader only) or `validate`.
#![forbid(unsafe_code)]

pub mod annotations;
pub mod certs;
pub mod cli;
pub mod diagnostics;
pub mod reconcile;
pub mod report;
pub mod run;
pub mod snapshot;
pub mod source;
pub mod status;
pub mod translate;
pub mod validate;
pub mod webhook;
