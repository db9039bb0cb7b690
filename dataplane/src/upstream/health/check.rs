//! Active health checks: one task per distinct (endpoint, check), however
//! many routes and tables use it, probing off the request path.
//!
//! Tables hold [`Check`] handles, from a [`crate::store::KeyedStore`] keyed
//! by endpoint and check settings: a check stops (its task is aborted) when
//! the last table that used it is gone, and a new table built while the old
//! one is live gets the same check, verdict and streaks included.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{HealthShared, duration_ms};
use crate::model::{HealthCheck, Probe, Protocol, StatusRange};
use crate::upstream::{Endpoint, EndpointKey, Io};

/// The largest health-check response body read (gRPC checks read theirs).
const MAX_PROBE_BODY: usize = 64 * 1024;

/// A check's identity in [`crate::upstream::Upstreams`]'s store: the
/// endpoint and the check's settings.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct CheckKey {
    pub(crate) endpoint: EndpointKey,
    pub(crate) check: HealthCheck,
}

/// One running check. Dropping the last handle stops its task and takes
/// back its verdict from the endpoint.
pub struct Check {
    endpoint: Arc<Endpoint>,
    state: Arc<CheckState>,
    task: AbortHandle,
}

struct CheckState {
    endpoint: Weak<Endpoint>,
    config: HealthCheck,
    shared: Arc<HealthShared>,
    verdict: Mutex<Verdict>,
    /// When the next probe starts ([`HealthShared::now_ms`] time); 0 while
    /// one runs.
    next_due_ms: AtomicU64,
    probes: AtomicU64,
}

#[derive(Default)]
struct Verdict {
    /// This check reports the endpoint unhealthy.
    failing: bool,
    /// The check is gone; nothing may flip any more.
    closed: bool,
}

/// What a check is doing, for `/debug/endpoints` and tests.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CheckReport {
    pub probe: Probe,
    pub failing: bool,
    pub probes: u64,
    /// `None` while a probe runs.
    pub next_probe_in_ms: Option<u64>,
}

impl Check {
    /// Starts checking `endpoint` per `config`. `None` outside a tokio
    /// runtime (nothing could run the probes).
    pub(crate) fn start(
        endpoint: &Arc<Endpoint>,
        config: &HealthCheck,
        shared: &Arc<HealthShared>,
    ) -> Option<Check> {
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(r) => r,
            Err(_) => {
                warn!(upstream.addr = %endpoint.addr(), "no runtime to run health checks on");
                return None;
            }
        };
        let state = Arc::new(CheckState {
            endpoint: Arc::downgrade(endpoint),
            config: config.clone(),
            shared: Arc::clone(shared),
            verdict: Mutex::default(),
            next_due_ms: AtomicU64::new(0),
            probes: AtomicU64::new(0),
        });
        let task = runtime.spawn(run(Arc::clone(&state))).abort_handle();
        Some(Check {
            endpoint: Arc::clone(endpoint),
            state,
            task,
        })
    }

    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    pub fn report(&self) -> CheckReport {
        let s = &self.state;
        let next = s.next_due_ms.load(Ordering::Acquire);
        CheckReport {
            probe: s.config.probe.clone(),
            failing: s.lock().failing,
            probes: s.probes.load(Ordering::Acquire),
            next_probe_in_ms: (next != 0).then(|| next.saturating_sub(s.shared.now_ms())),
        }
    }
}

impl Drop for Check {
    fn drop(&mut self) {
        self.task.abort();
        let mut v = self.state.lock();
        v.closed = true;
        if v.failing {
            v.failing = false;
            self.endpoint
                .health
                .set_active_failing(false, &self.state.shared);
        }
    }
}

impl CheckState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Verdict> {
        self.verdict.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Flips the verdict (under the lock the handle's drop takes too, so a
    /// check that is going away never leaves its mark on the endpoint).
    fn set_failing(&self, endpoint: &Endpoint, failing: bool) {
        let mut v = self.lock();
        if v.closed || v.failing == failing {
            return;
        }
        v.failing = failing;
        endpoint.health.set_active_failing(failing, &self.shared);
        if failing {
            warn!(upstream.addr = %endpoint.addr(), "health check: endpoint unhealthy");
        } else {
            info!(upstream.addr = %endpoint.addr(), "health check: endpoint healthy again");
        }
    }
}

// === the checker task ===

async fn run(state: Arc<CheckState>) {
    let cfg = &state.config;
    let shared = &state.shared;
    // Whole milliseconds on the shared clock, so a paused test clock that
    // moves in whole milliseconds meets every deadline exactly.
    let interval = duration_ms(cfg.interval).max(1);
    // The first probe somewhere within one interval, so checkers started
    // together (a publish) do not probe together.
    let mut next = shared.now_ms() + fastrand::u64(0..interval);
    let (mut passed, mut failed) = (0u32, 0u32);
    loop {
        state.next_due_ms.store(next, Ordering::Release);
        tokio::time::sleep_until(shared.instant_at(next)).await;
        let start = shared.now_ms();
        let started = Instant::now();
        state.next_due_ms.store(0, Ordering::Release);
        let Some(endpoint) = state.endpoint.upgrade() else {
            return;
        };
        let result = tokio::time::timeout(cfg.timeout, probe(&endpoint, cfg)).await;
        let ok = match result {
            Ok(Ok(())) => true,
            Ok(Err(reason)) => {
                debug!(upstream.addr = %endpoint.addr(), %reason, "health check failed");
                false
            }
            Err(_) => {
                debug!(upstream.addr = %endpoint.addr(), timeout = ?cfg.timeout, "health check timed out");
                false
            }
        };
        shared.check_duration.observe(started.elapsed());
        if ok {
            endpoint.health.checks_ok.fetch_add(1, Ordering::Relaxed);
            (passed, failed) = (passed.saturating_add(1), 0);
            if passed >= cfg.healthy_threshold {
                state.set_failing(&endpoint, false);
            }
        } else {
            endpoint
                .health
                .checks_failed
                .fetch_add(1, Ordering::Relaxed);
            (passed, failed) = (0, failed.saturating_add(1));
            if failed >= cfg.unhealthy_threshold {
                state.set_failing(&endpoint, true);
            }
        }
        state.probes.fetch_add(1, Ordering::AcqRel);
        drop(endpoint);
        // Intervals count from probe start to probe start; jitter only
        // shortens them, so a dead endpoint is found within
        // `unhealthy_threshold` intervals (plus the probe timeout).
        let jitter = fastrand::u64(0..=interval / 10);
        next = (start + interval - jitter).max(shared.now_ms());
    }
}

/// One probe, without its timeout.
async fn probe(endpoint: &Endpoint, cfg: &HealthCheck) -> Result<(), String> {
    let addr = match cfg.port {
        Some(port) => SocketAddr::new(endpoint.addr().ip(), port),
        None => endpoint.addr(),
    };
    let io = endpoint.connect_to(addr).await.map_err(|e| e.to_string())?;
    match &cfg.probe {
        Probe::Tcp => Ok(()),
        Probe::Http { path } => {
            let status = http_get(io, endpoint, addr, path).await?;
            if expected(&cfg.expected_statuses, status) {
                Ok(())
            } else {
                Err(format!("status {}", status.as_u16()))
            }
        }
        Probe::Grpc { service } => grpc_check(io, endpoint, addr, service).await,
    }
}

fn expected(ranges: &[StatusRange], status: StatusCode) -> bool {
    let s = status.as_u16();
    ranges.iter().any(|r| r.min <= s && s <= r.max)
}

fn target(endpoint: &Endpoint, addr: SocketAddr, path: &str) -> Result<Uri, String> {
    let scheme = if endpoint.uses_tls() { "https" } else { "http" };
    Uri::builder()
        .scheme(scheme)
        .authority(addr.to_string())
        .path_and_query(path)
        .build()
        .map_err(|e| format!("path {path:?}: {e}"))
}

/// `GET path` on a fresh connection; the connection is closed afterwards.
async fn http_get(
    io: Box<dyn Io>,
    endpoint: &Endpoint,
    addr: SocketAddr,
    path: &str,
) -> Result<StatusCode, String> {
    let uri = target(endpoint, addr, path)?;
    let io = TokioIo::new(io);
    let status = match endpoint.protocol() {
        Protocol::Http1 => {
            let (mut tx, conn) = http1::handshake::<_, Empty<Bytes>>(io)
                .await
                .map_err(|e| e.to_string())?;
            let conn = tokio::spawn(conn);
            let req = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
                .header(header::HOST, addr.to_string())
                .header(header::USER_AGENT, "portico-health-check")
                .header(header::CONNECTION, "close")
                .body(Empty::new())
                .map_err(|e| e.to_string())?;
            let rsp = tx.send_request(req).await;
            conn.abort();
            rsp.map_err(|e| e.to_string())?.status()
        }
        Protocol::H2c => {
            let (mut tx, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake::<_, Empty<Bytes>>(io)
                .await
                .map_err(|e| e.to_string())?;
            let conn = tokio::spawn(conn);
            let req = Request::get(uri)
                .header(header::USER_AGENT, "portico-health-check")
                .body(Empty::new())
                .map_err(|e| e.to_string())?;
            let rsp = tx.send_request(req).await;
            conn.abort();
            rsp.map_err(|e| e.to_string())?.status()
        }
    };
    Ok(status)
}

/// `grpc.health.v1.Health/Check` over HTTP/2; passes on SERVING with
/// `grpc-status: 0`.
async fn grpc_check(
    io: Box<dyn Io>,
    endpoint: &Endpoint,
    addr: SocketAddr,
    service: &str,
) -> Result<(), String> {
    let uri = target(endpoint, addr, "/grpc.health.v1.Health/Check")?;
    let (mut tx, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake::<_, Full<Bytes>>(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let result = async {
        let req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/grpc")
            .header(header::TE, "trailers")
            .header(header::USER_AGENT, "portico-health-check")
            .body(Full::new(health_check_request(service)))
            .map_err(|e| e.to_string())?;
        let rsp = tx.send_request(req).await.map_err(|e| e.to_string())?;
        if rsp.status() != StatusCode::OK {
            return Err(format!("HTTP status {}", rsp.status().as_u16()));
        }
        let (parts, body) = rsp.into_parts();
        let collected = Limited::new(body, MAX_PROBE_BODY)
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        // Trailers-only answers carry the status in the headers.
        let grpc_status = collected
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| parts.headers.get("grpc-status"))
            .map(|v| v.as_bytes().to_vec());
        if grpc_status.as_deref() != Some(b"0") {
            return Err(format!(
                "grpc-status {}",
                String::from_utf8_lossy(grpc_status.as_deref().unwrap_or(b"missing"))
            ));
        }
        match serving_status(collected.to_bytes()) {
            Some(1) => Ok(()),
            Some(s) => Err(format!("health status {s} (not SERVING)")),
            None => Err("malformed HealthCheckResponse".into()),
        }
    }
    .await;
    conn.abort();
    result
}

/// A gRPC frame holding `HealthCheckRequest { service }`: field 1, a
/// string, left out when empty (proto3).
fn health_check_request(service: &str) -> Bytes {
    let mut msg = BytesMut::new();
    if !service.is_empty() {
        msg.put_u8(0x0a);
        put_varint(&mut msg, service.len() as u64);
        msg.put_slice(service.as_bytes());
    }
    let mut frame = BytesMut::with_capacity(5 + msg.len());
    frame.put_u8(0);
    frame.put_u32(msg.len() as u32);
    frame.put_slice(&msg);
    frame.freeze()
}

fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn get_varint(buf: &mut Bytes) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        if !buf.has_remaining() {
            return None;
        }
        let b = buf.get_u8();
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The `status` (field 1) of the `HealthCheckResponse` in one
/// uncompressed gRPC frame; absent means UNKNOWN (0), as proto3 says.
fn serving_status(mut frame: Bytes) -> Option<u64> {
    if frame.remaining() < 5 || frame.get_u8() != 0 {
        return None;
    }
    let len = frame.get_u32() as usize;
    if frame.remaining() < len {
        return None;
    }
    let mut msg = frame.split_to(len);
    let mut status = 0;
    while msg.has_remaining() {
        let key = get_varint(&mut msg)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = get_varint(&mut msg)?,
            (_, 0) => {
                get_varint(&mut msg)?;
            }
            (_, 1) if msg.remaining() >= 8 => msg.advance(8),
            (_, 2) => {
                let n = usize::try_from(get_varint(&mut msg)?).ok()?;
                if msg.remaining() < n {
                    return None;
                }
                msg.advance(n);
            }
            (_, 5) if msg.remaining() >= 4 => msg.advance(4),
            _ => return None,
        }
    }
    Some(status)
}

impl HealthShared {
    /// The instant of a [`HealthShared::now_ms`] time.
    pub(crate) fn instant_at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_request_and_response_encode_as_protobuf() {
        assert_eq!(&health_check_request("")[..], [0, 0, 0, 0, 0]);
        assert_eq!(
            &health_check_request("shop.Cart")[..],
            [
                0, 0, 0, 0, 11, 0x0a, 9, b's', b'h', b'o', b'p', b'.', b'C', b'a', b'r', b't'
            ]
        );
        let frame = |msg: &[u8]| {
            let mut f = vec![0, 0, 0, 0, msg.len() as u8];
            f.extend_from_slice(msg);
            Bytes::from(f)
        };
        assert_eq!(serving_status(frame(&[0x08, 1])), Some(1));
        assert_eq!(serving_status(frame(&[0x08, 2])), Some(2));
        // proto3: a default value is left out.
        assert_eq!(serving_status(frame(&[])), Some(0));
        // Unknown fields are skipped.
        assert_eq!(
            serving_status(frame(&[0x12, 2, b'h', b'i', 0x08, 1])),
            Some(1)
        );
        // Compressed, truncated or garbled frames are not understood.
        assert_eq!(
            serving_status(Bytes::from_static(&[1, 0, 0, 0, 2, 0x08, 1])),
            None
        );
        assert_eq!(
            serving_status(Bytes::from_static(&[0, 0, 0, 0, 3, 0x08])),
            None
        );
        assert_eq!(serving_status(frame(&[0x08])), None);
    }

    #[test]
    fn expected_statuses_are_inclusive_ranges() {
        let r = [
            StatusRange { min: 200, max: 399 },
            StatusRange { min: 418, max: 418 },
        ];
        assert!(expected(&r, StatusCode::OK));
        assert!(expected(&r, StatusCode::PERMANENT_REDIRECT));
        assert!(expected(&r, StatusCode::IM_A_TEAPOT));
        assert!(!expected(&r, StatusCode::NOT_FOUND));
        assert!(!expected(&r, StatusCode::SERVICE_UNAVAILABLE));
    }
}
