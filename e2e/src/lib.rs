//! The e2e harness: a real etcd and kube-apiserver on 127.0.0.1, the
//! Portico Helm chart's RBAC applied to them, and the real `portico` binary
//! running out of cluster as the chart's ServiceAccount, in front of real
//! upstream HTTP servers in a network namespace of the test process's own
//! (`netns`). The scenarios live in `tests/`.
//!
//! Inputs (set by `make e2e`): `PORTICO_E2E_BIN_DIR` (etcd, kube-apiserver,
//! helm from `make e2e-tools`), `PORTICO_BIN` (the `portico` binary),
//! `PORTICO_CHART` (the chart directory). A missing one fails the test with
//! what to run; nothing is skipped.
//!
//! This is test support code: errors are `anyhow` with context, and a
//! failed expectation panics with what was waited for.
#![forbid(unsafe_code)]

mod browser;
mod chart;
mod control_plane;
mod env;
mod gateway;
mod netns;
mod objects;
pub mod oidc;
mod pki;
mod portico;
mod ports;
mod upstream;

use std::future::Future;
use std::time::{Duration, Instant};

pub use browser::{Browser, Page};
pub use chart::Chart;
pub use control_plane::ControlPlane;
pub use env::{TestEnv, tool};
pub use gateway::{
    GATEWAY_GROUP, GatewayPorts, condition, condition_state, delete_gateway_object,
    gateway_api_dir, get_gateway_object, host_tls_secret, https_get, install_gateway_api,
    namespace,
};
pub use objects::{
    apply, apply_json, endpoint_slice, ingress, service, tls_secret, wait_for_crd, warning_event,
};
pub use pki::HostCertificate;
pub use portico::{Portico, PorticoOptions, Response, binary as portico_binary};
pub use ports::{free_port, free_port_pair};
pub use upstream::Upstream;

/// Polls `f` every 20 ms until it returns `Some`; panics naming `what`
/// after `timeout`. The way to wait for asynchronous convergence.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Convergence deadline for a change to reach the proxy or the API.
pub const CONVERGE: Duration = Duration::from_secs(30);
