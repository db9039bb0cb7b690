//! The Portico controller: turns Ingress, HTTPRoute and their annotations
//! into the dataplane's routing model.
#![forbid(unsafe_code)]

pub mod annotations;
