//! The rebuild loop: any change → debounce → snapshot → translate → publish.
//!
//! Changes are coalesced: a rebuild starts once the sources have been quiet
//! for [`QUIET`], and never later than [`MAX_DELAY`] after the first change of
//! a burst, so a stream of changes cannot starve publication. Translation and
//! table compilation run on the blocking pool, off the proxy's workers. An
//! identical result is not published again.
//!
//! Certificates are published before routes, so a route for a TLS host is
//! never live before its certificate; the last good certificate per Secret
//! is remembered here ([`CertMemory`]), outside the pure translation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use portico_dataplane::listen::tls::CertConfig;
use portico_dataplane::{Dataplane, PortOutcome};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::certs::CertMemory;
use crate::diagnostics::ObjectRef;
use crate::snapshot::Snapshot;
use crate::translate::{self, ObjectReport, Settings, Translation};

/// Short, since waiting is a large share of apply-to-live: the events of
/// one `kubectl apply` or file write come closer together than this, and
/// changes arriving during a rebuild are coalesced into the next one.
pub const QUIET: Duration = Duration::from_millis(20);
pub const MAX_DELAY: Duration = Duration::from_millis(500);

/// Pulls the current snapshot; `None` until every source has synced once.
pub type SnapshotFn = Arc<dyn Fn() -> Option<Snapshot> + Send + Sync>;

/// The last translation, for the status writer; `None` before the first.
pub type Reports = watch::Receiver<Option<Arc<Translation>>>;

pub struct Rebuilder {
    dataplane: Dataplane,
    settings: Settings,
    snapshot: SnapshotFn,
    changes: Arc<Notify>,
    reports: watch::Sender<Option<Arc<Translation>>>,
}

impl Rebuilder {
    pub fn new(
        dataplane: Dataplane,
        settings: Settings,
        snapshot: SnapshotFn,
        changes: Arc<Notify>,
    ) -> (Self, Reports) {
        let (reports, rx) = watch::channel(None);
        (
            Self {
                dataplane,
                settings,
                snapshot,
                changes,
                reports,
            },
            rx,
        )
    }

    /// Runs until the task is dropped.
    pub async fn run(self) {
        let mut last_reports: BTreeMap<ObjectRef, ObjectReport> = BTreeMap::new();
        let mut certs = CertMemory::default();
        let mut memo = translate::Memo::default();
        let mut last_certs: Option<CertConfig> = None;
        // The Gateway ports' bind results of the last publish: they stand
        // until the next publish tries again.
        let mut last_ports: Vec<PortOutcome> = Vec::new();
        loop {
            self.changes.notified().await;
            let first = Instant::now();
            let deadline = first + MAX_DELAY;
            // Coalesce: wait until quiet, or the deadline.
            loop {
                let wake = (Instant::now() + QUIET).min(deadline);
                if tokio::time::timeout_at(wake, self.changes.notified())
                    .await
                    .is_err()
                    || Instant::now() >= deadline
                {
                    break;
                }
            }
            let snapshot = Arc::clone(&self.snapshot);
            let settings = self.settings.clone();
            let dataplane = self.dataplane.clone();
            let previous_certs = last_certs.take();
            let mut ports = std::mem::take(&mut last_ports);
            // The memory moves into the blocking task and back; if that task
            // panicked it starts afresh (the default certificate covers).
            let mut memory = std::mem::take(&mut certs);
            let mut reuse = std::mem::take(&mut memo);
            let result = tokio::task::spawn_blocking(move || {
                let mut split = Split::start();
                let Some(snap) = snapshot() else {
                    return ((memory, reuse), previous_certs, ports, None);
                };
                split.snapshot = split.lap();
                let mut translation = translate::translate_reusing(&snap, &settings, &mut reuse);
                split.translate = split.lap();
                split.reused = reuse.reused();
                split.reused_routes = reuse.reused_routes();
                let served = memory.serve(&translation, &settings);
                if previous_certs.as_ref() != Some(&served) {
                    dataplane.publish_certs(served.clone());
                }
                // One copy of the routing configuration is kept, the live
                // table's: at 10,000 rules each copy is about 11 MB. A
                // table's configuration differs from translation's only if
                // the build refused a field translation let through (they
                // share the checks), and then publishing again is harmless.
                // The first translation is always published, even an empty
                // one: readiness waits for it.
                let config = std::mem::take(&mut translation.config);
                let routes = config.routes.len();
                let changed = {
                    let live = dataplane.current();
                    live.generation() == 0 || live.config() != &config
                };
                split.compare = split.lap();
                let mut published = if changed {
                    let report = dataplane.publish(config);
                    ports = report.ports;
                    split.publish = split.lap();
                    Some((report.generation, split))
                } else {
                    None
                };
                translation.gateway.apply_port_outcomes(&ports);
                // A rebuild frees a whole translation and, on a publish, the
                // old table: return those pages now, from the thread that
                // freed most of them, instead of keeping them resident
                // until mimalloc's purge delay, which the next rebuild comes
                // before under steady edits. Off the request path.
                drop(snap);
                portico_alloc::collect();
                if let Some((_, split)) = published.as_mut() {
                    split.collect = split.lap();
                }
                (
                    (memory, reuse),
                    Some(served),
                    ports,
                    Some((translation, routes, published)),
                )
            })
            .await;
            let Ok(((memory, reuse), served, ports, result)) = result else {
                warn!("rebuild task failed; retrying on the next change");
                continue;
            };
            certs = memory;
            memo = reuse;
            last_certs = served;
            last_ports = ports;
            let Some((translation, routes, published)) = result else {
                debug!("sources not synced yet; nothing published");
                continue;
            };
            match published {
                Some((generation, split)) => info!(
                    generation,
                    routes,
                    event_to_swap_ms = first.elapsed().as_secs_f64() * 1e3,
                    snapshot_ms = split.snapshot,
                    translate_ms = split.translate,
                    reused_ingresses = split.reused,
                    reused_routes = split.reused_routes,
                    compare_ms = split.compare,
                    publish_ms = split.publish,
                    collect_ms = split.collect,
                    "published a new routing table"
                ),
                None => debug!("translation unchanged; table kept"),
            }
            log_new_diagnostics(&last_reports, &translation.reports);
            last_reports = translation.reports.clone();
            self.reports.send_replace(Some(Arc::new(translation)));
        }
    }
}

/// Where a rebuild's time went, in milliseconds: taking the snapshot,
/// translating it, publishing certificates and comparing the result with
/// the live config, and the table build and swap (`Dataplane::publish`).
/// The debounce before is the rest of `event_to_swap_ms`; `collect`
/// (returning freed memory, [`portico_alloc::collect`]) comes after the
/// swap, outside it. `reused`, `reused_routes`: the Ingresses and the
/// Gateway API routes translation took from its memo.
#[derive(Clone, Copy)]
struct Split {
    at: std::time::Instant,
    snapshot: f64,
    translate: f64,
    compare: f64,
    publish: f64,
    collect: f64,
    reused: usize,
    reused_routes: usize,
}

impl Split {
    fn start() -> Self {
        Self {
            at: std::time::Instant::now(),
            snapshot: 0.0,
            translate: 0.0,
            compare: 0.0,
            publish: 0.0,
            collect: 0.0,
            reused: 0,
            reused_routes: 0,
        }
    }

    /// Milliseconds since the last lap.
    fn lap(&mut self) -> f64 {
        let now = std::time::Instant::now();
        let ms = (now - self.at).as_secs_f64() * 1e3;
        self.at = now;
        ms
    }
}

/// Logs each object's findings once, when they change.
fn log_new_diagnostics(
    before: &BTreeMap<ObjectRef, ObjectReport>,
    now: &BTreeMap<ObjectRef, ObjectReport>,
) {
    for (obj, report) in now {
        if before.get(obj).map(|r| &r.diagnostics) == Some(&report.diagnostics) {
            continue;
        }
        for d in &report.diagnostics {
            warn!(
                object = %obj,
                severity = %d.severity,
                reason = d.reason,
                field = %d.field,
                "{}",
                d.message
            );
        }
    }
}
