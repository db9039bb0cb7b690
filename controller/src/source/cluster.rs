//! The cluster source: kube-runtime reflectors for every kind translation
//! reads. Nothing is published until each watch has listed once.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
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
use portico_crds::gateway::{
    Gateway, GatewayClass, GrpcRoute, HttpRoute as GatewayHttpRoute, ReferenceGrant,
};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::cli::RunArgs;
use crate::reconcile::SnapshotFn;
use crate::snapshot::{Object, Snapshot};

/// How often an absent custom resource definition is looked for again.
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

    // Custom resources are optional: run without each, and start watching
    // once its CRD appears.
    let (routes, t) = spawn_optional_watch::<HTTPRoute>(
        api(&client, ns),
        watch("HTTPRoute"),
        "the HTTPRoute CRD (httproutes.portico.dev) is not installed; serving without portico.dev HTTPRoutes until it is (`portico crds | kubectl apply -f -`)",
    );
    tasks.push(t);
    const GATEWAY_MISSING: &str =
        "is not installed (Gateway API CRDs: see docs/gateway.md); serving without it until it is";
    let (gateway_classes, t) = spawn_optional_watch::<GatewayClass>(
        Api::all(client.clone()),
        watch("GatewayClass"),
        GATEWAY_MISSING,
    );
    tasks.push(t);
    let (gateways, t) =
        spawn_optional_watch::<Gateway>(api(&client, ns), watch("Gateway"), GATEWAY_MISSING);
    tasks.push(t);
    let (gateway_routes, t) = spawn_optional_watch::<GatewayHttpRoute>(
        api(&client, ns),
        watch("HTTPRoute.gateway.networking.k8s.io"),
        GATEWAY_MISSING,
    );
    tasks.push(t);
    let (grpc_routes, t) =
        spawn_optional_watch::<GrpcRoute>(api(&client, ns), watch("GRPCRoute"), GATEWAY_MISSING);
    tasks.push(t);
    let (grants, t) = spawn_optional_watch::<ReferenceGrant>(
        api(&client, ns),
        watch("ReferenceGrant"),
        GATEWAY_MISSING,
    );
    tasks.push(t);
    // Labels for listeners' namespace selectors: few and small objects.
    let (namespaces, t) =
        spawn_watch::<Namespace>(Api::all(client.clone()), plain.clone(), watch("Namespace"));
    tasks.push(t);

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
            .chain(decoded(&routes).map(Object::HttpRoute))
            .chain(decoded(&gateway_classes).map(Object::GatewayClass))
            .chain(decoded(&gateways).map(Object::Gateway))
            .chain(decoded(&gateway_routes).map(Object::GatewayHttpRoute))
            .chain(decoded(&grpc_routes).map(Object::GrpcRoute))
            .chain(decoded(&grants).map(Object::ReferenceGrant))
            .chain(namespaces.state().into_iter().map(Object::Namespace));
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

/// The objects of an optional kind that decoded; the others were reported
/// when they arrived.
fn decoded<K>(store: &Store<DeserializeGuard<K>>) -> impl Iterator<Item = Arc<K>> + use<K>
where
    K: Resource + DeserializeOwned + Clone,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    store
        .state()
        .into_iter()
        .filter_map(|g| g.0.as_ref().ok().map(|o| Arc::new(o.clone())))
}

/// Watches a custom resource that may not be installed: while its CRD is
/// absent (the list answers 404) the kind counts as synced and empty, the
/// absence is said once (`missing` follows the kind's name), and the CRD is
/// looked for again every [`CRD_RECHECK`]. Objects that fail to decode are
/// reported and skipped, never breaking the watch.
fn spawn_optional_watch<K>(
    api: Api<DeserializeGuard<K>>,
    ctx: WatchCtx,
    missing: &'static str,
) -> (Store<DeserializeGuard<K>>, JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store::<DeserializeGuard<K>>();
    let task = tokio::spawn(async move {
        let (kind, flag, changes) = &ctx;
        loop {
            match api.list(&ListParams::default().limit(1)).await {
                Ok(_) => break,
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    if !flag.swap(true, Ordering::AcqRel) {
                        warn!(kind, "{kind} {missing}");
                        changes.notify_one();
                    }
                }
                Err(e) => warn!(kind, error = %e, "cannot check for the CRD; retrying"),
            }
            tokio::time::sleep(CRD_RECHECK).await;
        }
        flag.store(false, Ordering::Release);
        info!(kind, "watching");
        let stream = reflector::reflector(
            writer,
            watcher::watcher(api, watcher::Config::default())
                .backoff(watch_backoff())
                .modify(strip),
        );
        let kind = ctx.0;
        drive(stream, ctx, move |obj: &DeserializeGuard<K>| {
            report_undecodable(kind, obj)
        })
        .await;
    });
    (reader, task)
}

fn report_undecodable<K>(kind: &'static str, obj: &DeserializeGuard<K>) {
    if let Err(invalid) = &obj.0 {
        warn!(
            kind,
            namespace = invalid.metadata.namespace.as_deref().unwrap_or(""),
            name = invalid.metadata.name.as_deref().unwrap_or(""),
            error = %invalid.error,
            "object cannot be decoded; skipped"
        );
    }
}
