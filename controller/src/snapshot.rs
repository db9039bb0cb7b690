//! A consistent view of every object translation reads, taken at one moment
//! from the watch caches or the manifest directory.
//!
//! Translation is a pure function of a [`Snapshot`], so the cluster and the
//! manifest directory feed the same code, and tests build snapshots from
//! YAML fixtures.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::ResourceExt;
use portico_crds::HTTPRoute;
use portico_crds::gateway::{
    Gateway, GatewayClass, GrpcRoute, HttpRoute as GatewayHttpRoute, ReferenceGrant,
};

/// The label the EndpointSlice controller sets to the owning Service's name.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Namespace and name.
pub type Key = (String, String);

#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Sorted by namespace and name, so translation output is deterministic.
    pub ingresses: Vec<Arc<Ingress>>,
    pub ingress_classes: BTreeMap<String, Arc<IngressClass>>,
    pub http_routes: Vec<Arc<HTTPRoute>>,
    pub services: BTreeMap<Key, Arc<Service>>,
    /// By the Service they belong to.
    pub endpoint_slices: BTreeMap<Key, Vec<Arc<EndpointSlice>>>,
    pub secrets: BTreeMap<Key, Arc<Secret>>,
    /// Gateway API objects, each list sorted by namespace and name.
    pub gateway_classes: BTreeMap<String, Arc<GatewayClass>>,
    pub gateways: Vec<Arc<Gateway>>,
    pub gateway_http_routes: Vec<Arc<GatewayHttpRoute>>,
    pub grpc_routes: Vec<Arc<GrpcRoute>>,
    pub reference_grants: Vec<Arc<ReferenceGrant>>,
    /// By name: their labels select routes for Gateway listeners
    /// (`allowedRoutes.namespaces.selector`).
    pub namespaces: BTreeMap<String, Arc<Namespace>>,
    /// Addresses of `ExternalName` Services' DNS names, resolved outside
    /// translation (which does no I/O). Absent: not resolved (yet).
    pub external_names: BTreeMap<String, Vec<IpAddr>>,
    /// When the snapshot was taken (Unix seconds): certificate validity is
    /// judged against it, so translation itself reads no clock.
    pub taken_at: i64,
}

impl Snapshot {
    /// Whether `other` holds the very same objects (the same `Arc`s, in
    /// the same places) in every list but the Ingresses, the Services and
    /// their EndpointSlices (for those, see [`Snapshot::changed_services`]),
    /// and the same resolved names; when it was taken is not compared.
    /// Field by field, so that a new field does not compile here until it
    /// is compared.
    pub fn same_objects_besides_ingresses_and_services(&self, other: &Snapshot) -> bool {
        let Snapshot {
            ingresses: _,
            ingress_classes,
            http_routes,
            services: _,
            endpoint_slices: _,
            secrets,
            gateway_classes,
            gateways,
            gateway_http_routes,
            grpc_routes,
            reference_grants,
            namespaces,
            external_names,
            taken_at: _,
        } = self;
        same_map(ingress_classes, &other.ingress_classes)
            && same_list(http_routes, &other.http_routes)
            && same_map(secrets, &other.secrets)
            && same_map(gateway_classes, &other.gateway_classes)
            && same_list(gateways, &other.gateways)
            && same_list(gateway_http_routes, &other.gateway_http_routes)
            && same_list(grpc_routes, &other.grpc_routes)
            && same_list(reference_grants, &other.reference_grants)
            && same_map(namespaces, &other.namespaces)
            && *external_names == other.external_names
    }

    /// The Services (namespace, name) whose object or EndpointSlices are
    /// not the very same in `other`, present in either.
    pub fn changed_services(&self, other: &Snapshot) -> BTreeSet<Key> {
        let mut changed = BTreeSet::new();
        differing(&self.services, &other.services, Arc::ptr_eq, &mut changed);
        differing(
            &self.endpoint_slices,
            &other.endpoint_slices,
            |a, b| same_list(a, b),
            &mut changed,
        );
        changed
    }

    /// What an Ingress's translation reads besides the Ingress:
    /// IngressClasses, Secrets (certificates, auth files, CA bundles),
    /// Services and their EndpointSlices (each Ingress records which it
    /// looked up) and resolved ExternalNames; the time is read only by
    /// parts that are never kept. The rest is left empty, so that an edit
    /// to a Gateway API object does not translate every Ingress again. A
    /// read of anything else added to Ingress translation must be added
    /// here.
    pub fn ingress_inputs(&self) -> Snapshot {
        Snapshot {
            ingress_classes: self.ingress_classes.clone(),
            services: self.services.clone(),
            endpoint_slices: self.endpoint_slices.clone(),
            secrets: self.secrets.clone(),
            external_names: self.external_names.clone(),
            ..Snapshot::default()
        }
    }

    /// What a `portico.dev` HTTPRoute's translation reads besides the
    /// route: Services and their EndpointSlices (each route records which
    /// it looked up), Secrets (JWKS) and resolved ExternalNames; as
    /// [`Self::ingress_inputs`], a read of anything else added to it must
    /// be added here.
    pub fn http_route_inputs(&self) -> Snapshot {
        Snapshot {
            services: self.services.clone(),
            endpoint_slices: self.endpoint_slices.clone(),
            secrets: self.secrets.clone(),
            external_names: self.external_names.clone(),
            ..Snapshot::default()
        }
    }

    /// What a Gateway API route's translation reads besides the route:
    /// Services and their EndpointSlices (each route records which it
    /// looked up), ReferenceGrants and resolved ExternalNames. The rest is
    /// left empty. Compared with [`Self::same_objects_besides_ingresses_and_services`]
    /// and [`Self::changed_services`] to tell whether a route translated
    /// before may be taken again; a read of anything else added to route
    /// translation must be added here.
    pub fn route_inputs(&self) -> Snapshot {
        Snapshot {
            services: self.services.clone(),
            endpoint_slices: self.endpoint_slices.clone(),
            reference_grants: self.reference_grants.clone(),
            external_names: self.external_names.clone(),
            ..Snapshot::default()
        }
    }
}

/// Adds to `out` every key of `a` or `b` that the other lacks, or whose
/// values `same` tells apart.
fn differing<T>(
    a: &BTreeMap<Key, T>,
    b: &BTreeMap<Key, T>,
    same: impl Fn(&T, &T) -> bool,
    out: &mut BTreeSet<Key>,
) {
    for (k, x) in a {
        if !b.get(k).is_some_and(|y| same(x, y)) {
            out.insert(k.clone());
        }
    }
    out.extend(b.keys().filter(|k| !a.contains_key(*k)).cloned());
}

fn same_list<T>(a: &[Arc<T>], b: &[Arc<T>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y))
}

fn same_map<K: PartialEq, T>(a: &BTreeMap<K, Arc<T>>, b: &BTreeMap<K, Arc<T>>) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, x), (kb, y))| ka == kb && Arc::ptr_eq(x, y))
}

/// Any object a snapshot holds, as read from a watch or a manifest.
#[derive(Clone, Debug)]
pub enum Object {
    Ingress(Arc<Ingress>),
    IngressClass(Arc<IngressClass>),
    HttpRoute(Arc<HTTPRoute>),
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
    Secret(Arc<Secret>),
    GatewayClass(Arc<GatewayClass>),
    Gateway(Arc<Gateway>),
    GatewayHttpRoute(Arc<GatewayHttpRoute>),
    GrpcRoute(Arc<GrpcRoute>),
    ReferenceGrant(Arc<ReferenceGrant>),
    Namespace(Arc<Namespace>),
}

/// How an `ExternalName` is keyed in [`Snapshot::external_names`]: DNS names
/// are case-insensitive and a trailing dot only marks them absolute.
pub fn external_name_key(dns: &str) -> String {
    dns.trim().trim_end_matches('.').to_ascii_lowercase()
}

pub fn key<K: ResourceExt>(obj: &K) -> Key {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

impl Snapshot {
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> Self {
        let mut snap = Snapshot {
            taken_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            ..Snapshot::default()
        };
        for obj in objects {
            snap.insert(obj);
        }
        snap.finish();
        snap
    }

    fn insert(&mut self, obj: Object) {
        match obj {
            Object::Ingress(o) => self.ingresses.push(o),
            Object::IngressClass(o) => {
                self.ingress_classes.insert(o.name_any(), o);
            }
            Object::HttpRoute(o) => self.http_routes.push(o),
            Object::Service(o) => {
                self.services.insert(key(&*o), o);
            }
            Object::EndpointSlice(o) => {
                if let Some(svc) = o.labels().get(SERVICE_NAME_LABEL) {
                    let k = (o.namespace().unwrap_or_default(), svc.clone());
                    self.endpoint_slices.entry(k).or_default().push(o);
                }
            }
            Object::Secret(o) => {
                self.secrets.insert(key(&*o), o);
            }
            Object::GatewayClass(o) => {
                self.gateway_classes.insert(o.name_any(), o);
            }
            Object::Gateway(o) => self.gateways.push(o),
            Object::GatewayHttpRoute(o) => self.gateway_http_routes.push(o),
            Object::GrpcRoute(o) => self.grpc_routes.push(o),
            Object::ReferenceGrant(o) => self.reference_grants.push(o),
            Object::Namespace(o) => {
                self.namespaces.insert(o.name_any(), o);
            }
        }
    }

    /// Sorts and de-duplicates (the last object with a key wins, as a later
    /// manifest document or watch event would).
    fn finish(&mut self) {
        fn dedup<T: ResourceExt>(v: &mut Vec<Arc<T>>) {
            // Stable sort keeps insertion order among equal keys; keep the last.
            v.sort_by_key(|o| key(&**o));
            let mut out: Vec<Arc<T>> = Vec::with_capacity(v.len());
            for o in v.drain(..) {
                match out.last_mut() {
                    Some(last) if key(&**last) == key(&*o) => *last = o,
                    _ => out.push(o),
                }
            }
            *v = out;
        }
        dedup(&mut self.ingresses);
        dedup(&mut self.http_routes);
        dedup(&mut self.gateways);
        dedup(&mut self.gateway_http_routes);
        dedup(&mut self.grpc_routes);
        dedup(&mut self.reference_grants);
        for slices in self.endpoint_slices.values_mut() {
            dedup(slices);
        }
    }
}
