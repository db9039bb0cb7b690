//! One file per feature group: its registry entries, its parsers, its part
//! of the [`Draft`](super::Draft), its `finish` checks (the rules between its
//! annotations) and its tests.

use super::registry::AnnotationSpec;

pub(super) mod access_lists;
pub(super) mod balance;
pub(super) mod basic_auth;
pub(super) mod body_size;
pub(super) mod canary;
pub(super) mod cors;
pub(super) mod error_pages;
pub(super) mod grpc;
pub(super) mod headers;
pub(super) mod hosts;
pub(super) mod https;
pub(super) mod redirects;
pub(super) mod rewrite;
pub(super) mod service_health;
pub(super) mod timeouts;
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
    hosts::SPECS,
    error_pages::SPECS,
    headers::CUSTOM,
    https::SPECS,
    basic_auth::SPECS,
    upstream::TLS,
    balance::SPECS,
    timeouts::RETRIES,
    service_health::SPECS,
    cors::SPECS,
    grpc::SPECS,
];
