//! The cluster source: kube-runtime reflectors for every kind translation
//! reads. Nothing is published until each watch has listed once.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::DeserializeGuard;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::utils::ResetTimerBackoff;
use kube::runtime::watcher::ExponentialBackoff;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use portico_crds::HTTPRoute;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::cli::RunArgs;
use crate::reconcile::SnapshotFn;
use crate::snapshot::{Object, Snapshot};

/// How often an absent HTTPRoute CRD is looked for again.
const CRD_RECHECK: Duration = Duration::from_secs(30);

/// Watch retries after an error, e.g. the API server away: 200 ms doubling
/// to 1.5 s, each with up to as much again of jitter, so changes made during
/// an outage are live within a few seconds of its end. kube-runtime's
/// default (client-go's) grows to 30 s plus jitter, which left a minute of
/// staleness after a 30 s outage. A replica's half-dozen watches retrying
/// every 1.5-3 s is light load even for a struggling API server. The policy
/// starts over once a watch has been healthy for a minute.
fn watch_backoff() -> ResetTimerBackoff<ExponentialBackoff> {
    let exponential = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_millis(1500))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(exponential.into(), Duration::from_secs(60))
}

/// Fields translation never reads, dropped before the reflector stores the
/// object: `managedFields` and kubectl's copy of the last applied object
/// are often most of an object's size.
fn strip<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
    if let Some(a) = obj.meta_mut().annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A kube client from `--kubeconfig`, else the usual inference (KUBECONFIG,
/// ~/.kube/config, in-cluster service account).
pub async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .context("loading kubeconfig")?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig and not in a cluster (use --kubeconfig or --manifests)")?,
    };
    Client::try_from(config).context("building the Kubernetes client")
}

/// Keeps the watch tasks alive; aborts them when dropped.
pub struct ClusterWatch {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ClusterWatch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub async fn start(
    args: &RunArgs,
    changes: Arc<Notify>,
) -> anyhow::Result<(SnapshotFn, ClusterWatch)> {
    let client = client(args.kubeconfig.as_deref()).await?;
    let ns = args.watch_namespace.as_deref();
    fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let mut tasks = Vec::new();
    let mut synced = Vec::new();
    let mut watch = |name: &'static str| {
        let flag = Arc::new(AtomicBool::new(false));
        synced.push(Arc::clone(&flag));
        (name, flag, Arc::clone(&changes))
    };
    let plain = watcher::Config::default();
    let (ingresses, t) = spawn_watch::<Ingress>(api(&client, ns), plain.clone(), watch("Ingress"));
    tasks.push(t);
    let (classes, t) = spawn_watch::<IngressClass>(
        Api::all(client.clone()),
        plain.clone(),
        watch("IngressClass"),
    );
    tasks.push(t);
    let (services, t) = spawn_watch::<Service>(api(&client, ns), plain.clone(), watch("Service"));
    tasks.push(t);
    let (slices, t) =
        spawn_watch::<EndpointSlice>(api(&client, ns), plain.clone(), watch("EndpointSlice"));
    tasks.push(t);
    let (secrets, t) = spawn_watch::<Secret>(
        api(&client, ns),
        plain.clone().fields("type=kubernetes.io/tls"),
        watch("Secret"),
    );
    tasks.push(t);
    // Basic-auth users. A second watch by type, so that Helm release
    // Secrets, service-account tokens and the like stay out of memory.
    let (opaque, t) = spawn_watch::<Secret>(
        api(&client, ns),
        plain.clone().fields("type=Opaque"),
        watch("Secret (Opaque)"),
    );
    tasks.push(t);

    // HTTPRoute is optional: run without it, and start watching once the
    // CRD appears.
    let (routes_store, routes_writer) = reflector::store::<DeserializeGuard<HTTPRoute>>();
    let routes_flag = watch("HTTPRoute");
    let routes_api: Api<DeserializeGuard<HTTPRoute>> = api(&client, ns);
    tasks.push(tokio::spawn(async move {
        let (_, flag, changes) = &routes_flag;
        loop {
            match routes_api.list(&ListParams::default().limit(1)).await {
                Ok(_) => break,
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    if !flag.swap(true, Ordering::AcqRel) {
                        warn!("the HTTPRoute CRD (httproutes.portico.dev) is not installed; serving Ingresses only until it is (`portico crds | kubectl apply -f -`)");
                        changes.notify_one();
                    }
                }
                Err(e) => warn!(error = %e, "cannot check for the HTTPRoute CRD; retrying"),
            }
            tokio::time::sleep(CRD_RECHECK).await;
        }
        flag.store(false, Ordering::Release);
        info!("watching HTTPRoutes");
        let stream = reflector::reflector(
            routes_writer,
            watcher::watcher(routes_api, watcher::Config::default())
                .backoff(watch_backoff())
                .modify(strip),
        );
        drive(stream, routes_flag, report_undecodable).await;
    }));

    let snapshot: SnapshotFn = Arc::new(move || {
        if !synced.iter().all(|f| f.load(Ordering::Acquire)) {
            return None;
        }
        let objects = ingresses
            .state()
            .into_iter()
            .map(Object::Ingress)
            .chain(classes.state().into_iter().map(Object::IngressClass))
            .chain(services.state().into_iter().map(Object::Service))
            .chain(slices.state().into_iter().map(Object::EndpointSlice))
            .chain(secrets.state().into_iter().map(Object::Secret))
            .chain(opaque.state().into_iter().map(Object::Secret))
            .chain(routes_store.state().into_iter().filter_map(|g| {
                g.0.as_ref()
                    .ok()
                    .map(|r| Object::HttpRoute(Arc::new(r.clone())))
            }));
        Some(Snapshot::from_objects(objects))
    });
    Ok((snapshot, ClusterWatch { tasks }))
}

type WatchCtx = (&'static str, Arc<AtomicBool>, Arc<Notify>);

fn spawn_watch<K>(api: Api<K>, config: watcher::Config, ctx: WatchCtx) -> (Store<K>, JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher::watcher(api, config)
            .backoff(watch_backoff())
            .modify(strip),
    );
    let task = tokio::spawn(drive(stream, ctx, |_: &K| {}));
    (reader, task)
}

async fn drive<K, S>(stream: S, ctx: WatchCtx, inspect: impl Fn(&K))
where
    S: futures_util::Stream<Item = Result<Event<K>, watcher::Error>>,
{
    let (kind, synced, changes) = ctx;
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::InitDone) => {
                if !synced.swap(true, Ordering::AcqRel) {
                    info!(kind, "watch synced");
                }
                changes.notify_one();
            }
            Ok(Event::Init) => {}
            Ok(Event::InitApply(obj)) => inspect(&obj),
            Ok(Event::Apply(obj)) => {
                inspect(&obj);
                changes.notify_one();
            }
            Ok(Event::Delete(_)) => changes.notify_one(),
            Err(e) => {
                warn!(kind, error = %e, "watch failed; retrying with backoff, last state keeps serving")
            }
        }
    }
}

fn report_undecodable(obj: &DeserializeGuard<HTTPRoute>) {
    if let Err(invalid) = &obj.0 {
        warn!(
            kind = "HTTPRoute",
            namespace = invalid.metadata.namespace.as_deref().unwrap_or(""),
            name = invalid.metadata.name.as_deref().unwrap_or(""),
            error = %invalid.error,
            "object cannot be decoded; skipped"
        );
    }
}
