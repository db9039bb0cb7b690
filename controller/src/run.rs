//! `portico run`: the dataplane, a source of objects, and the rebuild loop
//! between them, until SIGTERM or SIGINT; then a bounded drain.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use notify::{RecursiveMode, Watcher};
use portico_dataplane::{AccessLogSink, Dataplane, DataplaneConfig, Listeners};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tracing::{info, warn};

use crate::cli::{DebugAddr, RunArgs};
use crate::reconcile::{Rebuilder, SnapshotFn};
use crate::source::manifests::ManifestDir;

/// How often a manifest directory is rescanned when the platform cannot
/// deliver file-change notifications.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let dataplane = Dataplane::new(DataplaneConfig {
        listener: portico_dataplane::ListenerConfig {
            ssl_passthrough: args.tls.enable_ssl_passthrough,
            path: args.request.path_policy(),
            head: args.request.head_rules(),
            proxy_protocol: args.client_address.proxy_protocol,
            ..Default::default()
        },
        trusted_proxies: portico_dataplane::request::forwarded::TrustedProxies::new(
            args.client_address.trusted_proxies.iter().copied(),
        ),
        access_log: if args.access_log {
            AccessLogSink::Stdout
        } else {
            AccessLogSink::Disabled
        },
        drain_timeout: args.drain_timeout,
        basic_auth: args.basic_auth.config(),
        limits: portico_dataplane::filter::rate_limit::LimitConfig {
            // u32 always fits a usize on the platforms portico builds for.
            max_keys: usize::try_from(args.limit_max_keys).unwrap_or(usize::MAX),
        },
        tracing: args.tracing.config()?,
        global_limits: args.global_limits.config()?,
        mirror: args.mirror.config(),
        // Gateway listener ports open beside the main HTTP listener, on
        // its address (loopback in tests, every interface in a pod).
        gateway_address: args.http_addr.ip(),
        ..Default::default()
    })
    .context("starting the dataplane")?;
    let proxy = TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("binding --http-addr {}", args.http_addr))?;
    let https = TcpListener::bind(args.https_addr)
        .await
        .with_context(|| format!("binding --https-addr {}", args.https_addr))?;
    let admin = TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("binding --admin-addr {}", args.admin_addr))?;
    let debug = match args.debug_addr {
        DebugAddr::Off => None,
        DebugAddr::Listen(addr) => {
            if !addr.ip().is_loopback() {
                warn!(%addr, "--debug-addr is not loopback: the route table and pod addresses are reachable from outside the pod");
            }
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --debug-addr {addr}"))?;
            Some(listener)
        }
    };
    let debug_shown = match &debug {
        Some(l) => l.local_addr()?.to_string(),
        None => "off".to_owned(),
    };
    info!(
        http = %proxy.local_addr()?,
        https = %https.local_addr()?,
        admin = %admin.local_addr()?,
        debug = %debug_shown,
        "listening"
    );

    let changes = Arc::new(Notify::new());
    let settings = args.tls.apply(args.class.settings());
    if !settings.custom_http_errors.is_empty() && settings.default_backend_service.is_none() {
        warn!(
            "--custom-http-errors without --default-backend-service: only Ingresses with a default-backend annotation get error pages"
        );
    }
    let (snapshot, _source_guard): (SnapshotFn, Box<dyn Send>) = match &args.manifests {
        Some(dir) => {
            let (f, guard) = manifest_source(dir.clone(), Arc::clone(&changes))?;
            (f, Box::new(guard))
        }
        None => {
            let (f, guard) = crate::source::cluster::start(&args, Arc::clone(&changes)).await?;
            (f, Box::new(guard))
        }
    };
    let (snapshot, _resolver) =
        crate::source::dns::resolve_external_names(snapshot, Arc::clone(&changes));
    let (rebuilder, reports) = Rebuilder::new(dataplane.clone(), settings, snapshot, changes);
    let rebuild = tokio::spawn(rebuilder.run());
    let status = match &args.manifests {
        Some(_) => None,
        None => Some(crate::status::start(&args, reports).await?),
    };

    let listeners = Listeners {
        http: proxy,
        https: Some(https),
        admin,
        debug,
    };
    let drained = dataplane
        .serve_listeners(listeners, shutdown_signal())
        .await;
    rebuild.abort();
    // The spans still queued go out, within the exporter's timeout.
    let flushing = dataplane.clone();
    if tokio::task::spawn_blocking(move || flushing.shutdown_tracing())
        .await
        .is_err()
    {
        warn!("tracing: the exporter did not shut down cleanly");
    }
    if let Some(status) = status {
        status.shutdown().await;
    }
    if drained {
        info!("drained; exiting");
    } else {
        warn!("drain deadline passed; exiting with requests cut");
    }
    Ok(())
}

/// Completes on SIGTERM (what Kubernetes sends) or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!("SIGINT received"),
        () = term => info!("SIGTERM received"),
    }
}

/// Keeps the file watcher alive.
pub struct ManifestWatch {
    _watcher: Option<notify::RecommendedWatcher>,
    _task: tokio::task::JoinHandle<()>,
}

/// Reads the directory now (failing if it cannot be read at all), then
/// rescans on every change notification, or on a timer where notifications
/// are unavailable.
pub fn manifest_source(
    root: PathBuf,
    changes: Arc<Notify>,
) -> anyhow::Result<(SnapshotFn, ManifestWatch)> {
    let mut dir = ManifestDir::new(&root);
    dir.rescan()
        .with_context(|| format!("reading --manifests {}", root.display()))?;
    report_manifest_errors(&dir);
    // Parsing every file leaves this thread's pages full of freed YAML
    // trees; the rebuild loop collects only its own thread's.
    portico_alloc::collect();
    let dir = Arc::new(Mutex::new(dir));

    // Each notification's paths: those files are read whatever their stamp.
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<PathBuf>>();
    let watcher = {
        let tx = tx.clone();
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && crate::source::manifests::is_change(&event.kind)
            {
                let _ = tx.send(event.paths);
            }
        })
        .and_then(|mut w| w.watch(&root, RecursiveMode::Recursive).map(|()| w))
    };
    let watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(error = %e, "file notifications unavailable; polling the manifest directory");
            None
        }
    };
    let poll = watcher.is_none();
    let task_dir = Arc::clone(&dir);
    let task_changes = Arc::clone(&changes);
    let task = tokio::spawn(async move {
        loop {
            let mut named = Vec::new();
            if poll {
                tokio::time::sleep(POLL_INTERVAL).await;
            } else {
                match rx.recv().await {
                    Some(paths) => named.extend(paths),
                    None => return,
                }
            }
            // Editors write in bursts: absorb what is already queued.
            while let Ok(paths) = rx.try_recv() {
                named.extend(paths);
            }
            named.sort_unstable();
            named.dedup();
            // Reading and parsing files blocks: keep it off the runtime's
            // workers, which may be the proxy's.
            let scan_dir = Arc::clone(&task_dir);
            let changed = tokio::task::spawn_blocking(move || {
                let mut dir = scan_dir.lock().unwrap_or_else(|p| p.into_inner());
                // Poll mode names nothing: always the full listing.
                let scan = match dir.refresh_named(&named) {
                    Some(scan) => Ok(scan),
                    None => dir.rescan_named(&named),
                };
                match scan {
                    Ok(scan) => {
                        if scan.changed {
                            report_manifest_errors(&dir);
                        }
                        scan.changed
                    }
                    Err(e) => {
                        warn!(error = %e, dir = %dir.root().display(), "cannot read the manifest directory; serving the last good objects");
                        false
                    }
                }
            })
            .await
            .unwrap_or(false);
            if changed {
                task_changes.notify_one();
            }
        }
    });
    drop(tx);
    // The first snapshot is ready: publish it.
    changes.notify_one();
    let snapshot: SnapshotFn = Arc::new(move || {
        let dir = dir.lock().unwrap_or_else(|p| p.into_inner());
        Some(dir.snapshot())
    });
    Ok((
        snapshot,
        ManifestWatch {
            _watcher: watcher,
            _task: task,
        },
    ))
}

fn report_manifest_errors(dir: &ManifestDir) {
    for e in dir.errors() {
        warn!(
            file = %e.file.display(),
            document = e.document,
            reason = %e.reason,
            "manifest not loaded; its file's last good objects keep serving"
        );
    }
}
