//! One file per feature group: its registry entries, its parsers, its part
//! of the [`Draft`](super::Draft), its `finish` checks (the rules between its
//! annotations) and its tests.

use super::registry::AnnotationSpec;

/// What every group's spec table and parsers are written in.
mod prelude {
    pub(super) use crate::annotations::registry::Scope::{Ingress, Path};
    pub(super) use crate::annotations::registry::Support::{Full, Partly};
    pub(super) use crate::annotations::registry::{AnnotationSpec, service, spec};
    pub(super) use crate::annotations::{
        Draft,
        Fallback::{Ignored, PathDenied},
        KeyedNote, values,
    };
}

pub(super) mod access_lists;
pub(super) mod balance;
pub(super) mod basic_auth;
pub(super) mod body_size;
pub(super) mod canary;
pub(super) mod cors;
pub(super) mod error_pages;
pub(super) mod external_auth;
pub(super) mod global_rate_limit;
pub(super) mod grpc;
pub(super) mod headers;
pub(super) mod hosts;
pub(super) mod https;
pub(super) mod jwt;
pub(super) mod mirror;
pub(super) mod rate_limit;
pub(super) mod redirects;
pub(super) mod rewrite;
pub(super) mod service_health;
pub(super) mod timeouts;
pub(super) mod tracing;
pub(super) mod upstream;

/// The registry, in its order: the order annotations are parsed (and their
/// diagnostics reported) and documented. A group whose entries are not
/// adjacent there gives one slice per run.
pub(super) const RUNS: &[&[AnnotationSpec]] = &[
    rewrite::SPECS,
    redirects::SPECS,
    upstream::VHOST,
    headers::FORWARDED_PREFIX,
    timeouts::TIMEOUTS,
    body_size::SPECS,
    upstream::PROTOCOL,
    canary::SPECS,
    access_lists::SPECS,
    rate_limit::SPECS,
    global_rate_limit::SPECS,
    hosts::SPECS,
    error_pages::SPECS,
    headers::CUSTOM,
    https::SPECS,
    basic_auth::SPECS,
    external_auth::SPECS,
    jwt::SPECS,
    upstream::TLS,
    balance::SPECS,
    timeouts::RETRIES,
    service_health::SPECS,
    cors::SPECS,
    grpc::SPECS,
    tracing::SPECS,
    mirror::SPECS,
];

/// Each group's valid cases, run by `tests::valid_values_under_both_spellings`.
#[cfg(test)]
pub(super) const VALID: &[&[super::tests::Valid]] = &[
    access_lists::tests::VALID,
    balance::tests::VALID,
    basic_auth::tests::VALID,
    body_size::tests::VALID,
    canary::tests::VALID,
    cors::tests::VALID,
    error_pages::tests::VALID,
    external_auth::tests::VALID,
    global_rate_limit::tests::VALID,
    grpc::tests::VALID,
    headers::tests::VALID,
    hosts::tests::VALID,
    https::tests::VALID,
    rate_limit::tests::VALID,
    jwt::tests::VALID,
    mirror::tests::VALID,
    redirects::tests::VALID,
    rewrite::tests::VALID,
    timeouts::tests::VALID,
    tracing::tests::VALID,
    upstream::tests::VALID,
];

/// Each group's invalid cases, run by `tests::invalid_values_fall_back_as_documented`.
#[cfg(test)]
pub(super) const INVALID: &[&[super::tests::Invalid]] = &[
    access_lists::tests::INVALID,
    balance::tests::INVALID,
    body_size::tests::INVALID,
    canary::tests::INVALID,
    cors::tests::INVALID,
    error_pages::tests::INVALID,
    external_auth::tests::INVALID,
    global_rate_limit::tests::INVALID,
    grpc::tests::INVALID,
    headers::tests::INVALID,
    hosts::tests::INVALID,
    https::tests::INVALID,
    rate_limit::tests::INVALID,
    jwt::tests::INVALID,
    mirror::tests::INVALID,
    redirects::tests::INVALID,
    rewrite::tests::INVALID,
    timeouts::tests::INVALID,
    tracing::tests::INVALID,
    upstream::tests::INVALID,
];
