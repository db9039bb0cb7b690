//! Metrics and the access log.
//!
//! The request path only touches atomics: per-route counters are resolved
//! from their label families when a table is built, the latency histogram is
//! a fixed array of atomic buckets, and each request formats its access-log
//! line into a recycled buffer that a bounded queue takes to a writer thread.
//! When the queue is full the line is dropped and counted; a request never
//! waits for the log.

mod access_log;
mod format;
mod metrics;
pub mod trace;

pub use access_log::*;
pub use format::Rfc3339;
pub use metrics::*;
