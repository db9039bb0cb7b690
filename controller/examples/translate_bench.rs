//! How long a rebuild takes at scale: translation of a snapshot with N
//! Ingress rules, then compiling and swapping the dataplane table.
//!
//! Usage: `translate_bench [RULES] [ingress|httproute|portico]` (default
//! 10000 Ingress rules; `httproute`: the same rules as Gateway API
//! HTTPRoutes on one Gateway, ten rules each; `portico`: as `portico.dev`
//! HTTPRoutes). Prints the median of
//! several runs for each phase, then the heap each stage keeps: the
//! snapshot's objects, the translation (and its `RouteConfig`), the live
//! table, counted by a wrapper around the system allocator (bytes asked
//! for, not what the allocator holds from the OS); then the live table
//! by part (`RouteTable::heap_by_part`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use portico_controller::snapshot::{Object, Snapshot};
use portico_controller::translate::{Memo, Settings, translate, translate_reusing};
use portico_crds::HTTPRoute;
use portico_crds::gateway::{Gateway, GatewayClass, HttpRoute as GatewayHttpRoute};

/// Which objects carry the rules.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Ingress,
    Gateway,
    Portico,
}
use portico_dataplane::{Dataplane, DataplaneConfig, RouteTable};

/// Bytes allocated and not yet freed.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: every call is passed to the system allocator unchanged; the
// counter is only arithmetic on the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live_mib() -> f64 {
    LIVE.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0)
}

fn yaml<T: serde::de::DeserializeOwned>(s: &str) -> T {
    serde_yaml::from_str(s).expect("bench object")
}

fn main() {
    let rules: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let which = match std::env::args().nth(2).as_deref() {
        None | Some("ingress") => Which::Ingress,
        Some("httproute") => Which::Gateway,
        Some("portico") => Which::Portico,
        Some(other) => panic!("unknown kind {other:?}: ingress, httproute or portico"),
    };
    let gateway = which == Which::Gateway;
    let (kind, kinds) = match which {
        Which::Ingress => ("Ingress", "Ingresses"),
        Which::Gateway => ("HTTPRoute", "HTTPRoutes"),
        Which::Portico => ("portico.dev HTTPRoute", "portico.dev HTTPRoutes"),
    };
    let services = 100;
    let before_objects = live_mib();
    let mut objects = vec![Object::IngressClass(Arc::new(yaml::<IngressClass>(
        "metadata: {name: portico}\nspec: {controller: portico.dev/ingress-controller}",
    )))];
    for s in 0..services {
        objects.push(Object::Service(Arc::new(yaml::<Service>(&format!(
            "metadata: {{name: svc{s}, namespace: default}}\nspec: {{ports: [{{name: http, port: 80}}]}}"
        )))));
        objects.push(Object::EndpointSlice(Arc::new(yaml::<EndpointSlice>(&format!(
            "metadata: {{name: svc{s}-a, namespace: default, labels: {{kubernetes.io/service-name: svc{s}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [\"10.1.{}.{}\"]}}, {{addresses: [\"10.2.{}.{}\"]}}]",
            s / 250, s % 250, s / 250, s % 250
        )))));
    }
    if gateway {
        objects.push(Object::GatewayClass(Arc::new(yaml::<GatewayClass>(
            "metadata: {name: portico}\nspec: {controllerName: portico.dev/gateway-controller}",
        ))));
        objects.push(Object::Gateway(Arc::new(yaml::<Gateway>(
            "metadata: {name: gw, namespace: default}\nspec: {gatewayClassName: portico, listeners: [{name: http, port: 80, protocol: HTTP}]}",
        ))));
    }
    // One object per 10 rules: 10 paths on one host each.
    for i in 0..rules.div_ceil(10) {
        objects.push(object(which, i, services, 30));
    }
    let snap = Snapshot::from_objects(objects);
    let snapshot_mib = live_mib() - before_objects;
    let settings = Settings::default();
    let dataplane = Dataplane::new(DataplaneConfig::default()).expect("dataplane");

    let mut translate_times = Vec::new();
    let mut publish_times = Vec::new();
    for _ in 0..7 {
        let t0 = Instant::now();
        let t = translate(&snap, &settings);
        translate_times.push(t0.elapsed());
        let t1 = Instant::now();
        dataplane.publish(t.config);
        publish_times.push(t1.elapsed());
    }
    // A one-Ingress edit, as the rebuild loop makes it: translation that
    // reuses the unchanged Ingresses' parts, and a build that carries the
    // unchanged routes' compiled rules over.
    let mut memo = Memo::default();
    dataplane.publish(translate_reusing(&snap, &settings, &mut memo).config);
    let mut edit_translate = Vec::new();
    let mut edit_publish = Vec::new();
    for round in 0..7 {
        let mut edited = snap.clone();
        let objects = rules.div_ceil(10);
        let i = round * 37 % objects;
        match object(which, i, services, 31 + round) {
            Object::Ingress(ing) => edited.ingresses[i] = ing,
            Object::GatewayHttpRoute(r) => edited.gateway_http_routes[i] = r,
            Object::HttpRoute(r) => edited.http_routes[i] = r,
            _ => unreachable!("made by object()"),
        }
        let t0 = Instant::now();
        let t = translate_reusing(&edited, &settings, &mut memo);
        edit_translate.push(t0.elapsed());
        let t1 = Instant::now();
        dataplane.publish(t.config);
        edit_publish.push(t1.elapsed());
    }
    // A pod moving: one Service's EndpointSlice changed since the last
    // rebuild. Only the Ingresses that looked that Service up are
    // translated again (here each Ingress's ten paths name ten of the 100
    // Services, so about a tenth of them).
    let mut current = snap.clone();
    let mut moved_translate = Vec::new();
    let mut moved_publish = Vec::new();
    let mut moved_reused = Vec::new();
    for round in 0..7 {
        let s = round * 13 % services;
        let key = ("default".to_owned(), format!("svc{s}"));
        let slices = current.endpoint_slices.get_mut(&key).expect("slices");
        let mut slice = (*slices[0]).clone();
        slice.endpoints[0].addresses = vec![format!("10.3.{round}.1")];
        slices[0] = Arc::new(slice);
        let t0 = Instant::now();
        let t = translate_reusing(&current, &settings, &mut memo);
        moved_translate.push(t0.elapsed());
        moved_reused.push(match which {
            Which::Ingress => memo.reused(),
            Which::Gateway | Which::Portico => memo.reused_routes(),
        });
        let t1 = Instant::now();
        dataplane.publish(t.config);
        moved_publish.push(t1.elapsed());
    }
    // What each stage keeps, measured from a clean start of each.
    // The memo beside the translation it shares its routes with: what
    // dropping it frees.
    drop(memo);
    let mut memo = Memo::default();
    let t = translate_reusing(&snap, &settings, &mut memo);
    let with_memo = live_mib();
    drop(memo);
    let memo_mib = with_memo - live_mib();
    drop(t);
    let base = live_mib();
    let t = translate(&snap, &settings);
    let translation_mib = live_mib() - base;
    // Its routes copied, not shared, to count them.
    let config_only = live_mib();
    let mut config = t.config.clone();
    for route in &mut config.routes {
        *route = Arc::new((**route).clone());
    }
    let config_mib = live_mib() - config_only;
    // The rules' chains as data: the copy each rule's runtime kept
    // beside the config's until the table read the config's instead.
    let before_chains = live_mib();
    let chains: Vec<_> = config
        .routes
        .iter()
        .flat_map(|r| &r.rules)
        .map(|r| r.chain.clone())
        .collect();
    let chains_mib = live_mib() - before_chains;
    drop(chains);
    let live = || LIVE.load(Ordering::Relaxed);
    let parts = RouteTable::heap_by_part(config.clone(), &live);
    drop(dataplane);
    let fresh = Dataplane::new(DataplaneConfig::default()).expect("dataplane");
    let before_table = live_mib();
    fresh.publish(config);
    let table_mib = live_mib() - before_table;
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    println!(
        "{rules} {kind} rules ({} {kinds}): translate {:?}, compile+swap {:?} (median of 7)",
        rules.div_ceil(10),
        median(&mut translate_times),
        median(&mut publish_times)
    );
    println!(
        "one {kind} edited: translate {:?}, compile+swap {:?} (median of 7, reusing the unchanged)",
        median(&mut edit_translate),
        median(&mut edit_publish)
    );
    println!(
        "one Service's endpoints moved: translate {:?}, compile+swap {:?} (median of 7; objects reused {:?} of {})",
        median(&mut moved_translate),
        median(&mut moved_publish),
        moved_reused,
        rules.div_ceil(10)
    );
    println!(
        "heap kept: snapshot objects {snapshot_mib:.1} MiB, translation {translation_mib:.1} MiB \
         (its RouteConfig {config_mib:.1} MiB), live table {table_mib:.1} MiB (besides that RouteConfig, which it keeps), \
         translation memo (besides the routes it shares) {memo_mib:.1} MiB"
    );
    println!("live table by part (a build from empty stores; bytes per rule):");
    for (part, bytes) in parts {
        println!(
            "  {part:<36} {:>8.2} MiB {:>7.0}",
            bytes as f64 / (1024.0 * 1024.0),
            bytes as f64 / rules as f64
        );
    }
    println!(
        "  {:<36} {chains_mib:>8.2} MiB (in the RouteConfig)",
        "rule chains as data"
    );
    drop(t);
}

/// The `i`th object of ten rules on host `h{i}.example.com`, each rule
/// naming one of `services`, with a backend timeout of `timeout` seconds
/// (an edit changes it).
fn object(which: Which, i: usize, services: usize, timeout: usize) -> Object {
    // Both HTTPRoute kinds share Gateway API's rule shape.
    let rules: String = (0..10)
        .map(|p| {
            format!(
                "{{matches: [{{path: {{type: PathPrefix, value: /p{p}/x}}}}], timeouts: {{backendRequest: {timeout}s}}, backendRefs: [{{name: svc{}, port: 80}}]}},",
                (i + p) % services
            )
        })
        .collect();
    let metadata = format!("metadata: {{name: route{i:05}, namespace: default}}");
    match which {
        Which::Portico => {
            return Object::HttpRoute(Arc::new(yaml::<HTTPRoute>(&format!(
                "{metadata}\nspec: {{hostnames: [h{i}.example.com], rules: [{rules}]}}"
            ))));
        }
        Which::Gateway => {
            return Object::GatewayHttpRoute(Arc::new(yaml::<GatewayHttpRoute>(&format!(
                "{metadata}\nspec: {{parentRefs: [{{name: gw}}], hostnames: [h{i}.example.com], rules: [{rules}]}}"
            ))));
        }
        Which::Ingress => {}
    }
    let paths: String = (0..10)
        .map(|p| {
            format!(
                "{{path: /p{p}/x, pathType: Prefix, backend: {{service: {{name: svc{}, port: {{number: 80}}}}}}}},",
                (i + p) % services
            )
        })
        .collect();
    Object::Ingress(Arc::new(yaml::<Ingress>(&format!(
        "metadata: {{name: ing{i:05}, namespace: default, annotations: {{nginx.ingress.kubernetes.io/proxy-read-timeout: \"{timeout}\"}}}}\nspec: {{ingressClassName: portico, rules: [{{host: h{i}.example.com, http: {{paths: [{paths}]}}}}]}}"
    ))))
}
