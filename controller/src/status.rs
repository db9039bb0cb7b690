//! What Portico tells users through the API: Ingress load-balancer status,
//! HTTPRoute conditions, Gateway API status (`gateway`), and Warning Events
//! for what it could not accept.
//!
//! Every replica translates and serves; only the holder of the Lease writes.
//! Writes are server-side apply with one field manager, and content already
//! written is not written again, so status writes never feed back into a
//! rebuild storm.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
use portico_crds::HTTPRoute;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::cli::RunArgs;
use crate::diagnostics::{Diagnostic, Kind, ObjectRef, Severity};
use crate::reconcile::Reports;
use crate::translate::gateway::{RouteKind, RouteRef};
use crate::translate::{ObjectReport, Translation};

mod gateway;

/// The field manager of every status write.
pub const FIELD_MANAGER: &str = "portico.dev/status";
const REPORTING_CONTROLLER: &str = "portico.dev/ingress-controller";
/// How often the published Service's addresses are re-read.
const ADDRESS_REFRESH: Duration = Duration::from_secs(15);
const LEASE_DURATION_SECS: u64 = 15;
const LEASE_GRACE_SECS: u64 = 5;

pub struct StatusHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl StatusHandle {
    /// Stops writing; clears Ingress addresses first when configured to and
    /// this is the last replica.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

pub async fn start(args: &RunArgs, reports: Reports) -> anyhow::Result<StatusHandle> {
    let client = crate::source::cluster::client(args.kubeconfig.as_deref()).await?;
    let identity = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("portico-{}", std::process::id()));
    let leader = if args.leader_elect.unwrap_or(true) {
        let namespace = args
            .election_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".into());
        let manager = LeaseManagerBuilder::new(client.clone(), &args.election_id)
            .with_namespace(&namespace)
            .with_parameters(LeaseParams::new(
                identity.clone(),
                LEASE_DURATION_SECS,
                LEASE_GRACE_SECS,
            ))
            .build()
            .await
            .context("setting up leader election")?;
        let (rx, _task) = manager.watch().await;
        info!(lease = %args.election_id, %namespace, %identity, "leader election started");
        rx
    } else {
        // Never closed: the sender lives in the writer task below.
        watch::channel(true).1
    };
    let writer = StatusWriter::new(
        client,
        identity,
        args.publish_service.clone(),
        args.publish_status_address.clone(),
        args.update_status_on_shutdown,
        args.class.gateway_controller_name.clone(),
    );
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(writer.run(reports, leader, stop_rx));
    Ok(StatusHandle { stop, task })
}

struct StatusWriter {
    client: Client,
    recorder: Recorder,
    publish_service: Option<String>,
    publish_addresses: Vec<String>,
    update_on_shutdown: bool,
    /// `--gateway-controller-name`: our `controllerName` in route status.
    gateway_controller: String,
    /// The last status content written, per object.
    written: BTreeMap<ObjectRef, serde_json::Value>,
    /// Diagnostics already sent as Events, per object and generation.
    events_sent: BTreeMap<ObjectRef, (Option<i64>, BTreeSet<Diagnostic>)>,
    addresses: Vec<IngressLoadBalancerIngress>,
}

impl StatusWriter {
    fn new(
        client: Client,
        identity: String,
        publish_service: Option<String>,
        publish_addresses: Vec<String>,
        update_on_shutdown: bool,
        gateway_controller: String,
    ) -> Self {
        Self {
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: REPORTING_CONTROLLER.into(),
                    instance: Some(identity),
                },
            ),
            client,
            publish_service,
            publish_addresses,
            update_on_shutdown,
            gateway_controller,
            written: BTreeMap::new(),
            events_sent: BTreeMap::new(),
            addresses: Vec::new(),
        }
    }

    async fn run(
        mut self,
        mut reports: Reports,
        mut leader: watch::Receiver<bool>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut refresh = tokio::time::interval(ADDRESS_REFRESH);
        // The rebuild loop ends (its sender drops) before the stop: from
        // then on `changed()` is always ready, and being first in a biased
        // select it would starve the stop branch.
        let mut reports_open = true;
        loop {
            // Biased, in this order: a translation that arrived before a
            // leadership change or a stop is handled first.
            tokio::select! {
                biased;
                r = reports.changed(), if reports_open => reports_open = r.is_ok(),
                r = leader.changed() => {
                    if r.is_err() {
                        warn!("leader election stopped; no longer writing status");
                        let _ = stop.changed().await;
                        return;
                    }
                    if *leader.borrow() {
                        info!("became leader: writing status and Events");
                        // Re-assert everything: another replica may have
                        // written while we were not leading.
                        self.written.clear();
                    } else {
                        info!("lost leadership: no longer writing status");
                    }
                }
                _ = refresh.tick() => self.refresh_addresses().await,
                _ = stop.changed() => {
                    let leading = *leader.borrow();
                    let last = reports.borrow().clone();
                    if leading && self.update_on_shutdown {
                        self.clear_addresses_if_last(last).await;
                    }
                    return;
                }
            }
            let leading = *leader.borrow();
            if !leading {
                continue;
            }
            let current = reports.borrow().clone();
            let Some(translation) = current else {
                continue;
            };
            self.write_all(&translation).await;
        }
    }

    async fn write_all(&mut self, t: &Translation) {
        // Side-by-side Ingresses belong to another controller: it writes
        // their status and Events, never Portico.
        for (obj, report) in t.reports.iter().filter(|(_, r)| !r.read_only) {
            self.send_events(obj, report).await;
            let previous = self.previous_conditions(obj);
            let status = match obj.kind {
                Kind::Ingress => ingress_status(&self.addresses),
                Kind::HttpRoute => httproute_status(report, previous),
                Kind::GatewayClass => match t.gateway.classes.get(&obj.name) {
                    Some(r) => gateway::gatewayclass_status(r, previous),
                    None => continue,
                },
                Kind::Gateway => {
                    match t
                        .gateway
                        .gateways
                        .get(&(obj.namespace.clone(), obj.name.clone()))
                    {
                        Some(r) => gateway::gateway_status(r, &self.addresses, previous),
                        None => continue,
                    }
                }
                Kind::GatewayHttpRoute | Kind::GrpcRoute => {
                    let key = RouteRef {
                        kind: if obj.kind == Kind::GrpcRoute {
                            RouteKind::Grpc
                        } else {
                            RouteKind::Http
                        },
                        namespace: obj.namespace.clone(),
                        name: obj.name.clone(),
                    };
                    match t.gateway.routes.get(&key) {
                        Some(r) => gateway::route_status(r, &self.gateway_controller, previous),
                        None => continue,
                    }
                }
                _ => continue,
            };
            if self.written.get(obj).map(comparable) == Some(comparable(&status)) {
                continue;
            }
            match self.apply_status(obj, &status).await {
                Ok(()) => {
                    self.written.insert(obj.clone(), status);
                }
                Err(e) => {
                    warn!(object = %obj, error = %e, "status write failed; retrying on the next change")
                }
            }
        }
        // Forget objects that are gone.
        self.written.retain(|o, _| t.reports.contains_key(o));
        self.events_sent.retain(|o, _| t.reports.contains_key(o));
    }

    fn previous_conditions(&self, obj: &ObjectRef) -> Option<&serde_json::Value> {
        self.written.get(obj)
    }

    async fn apply_status(
        &self,
        obj: &ObjectRef,
        status: &serde_json::Value,
    ) -> anyhow::Result<()> {
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        match obj.kind {
            Kind::Ingress => {
                let api: Api<Ingress> = Api::namespaced(self.client.clone(), &obj.namespace);
                let patch = json!({
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "Ingress",
                    "status": status,
                });
                api.patch_status(&obj.name, &pp, &Patch::Apply(&patch))
                    .await?;
            }
            Kind::HttpRoute => {
                let api: Api<HTTPRoute> = Api::namespaced(self.client.clone(), &obj.namespace);
                let patch = json!({
                    "apiVersion": "portico.dev/v1alpha1",
                    "kind": "HTTPRoute",
                    "status": status,
                });
                api.patch_status(&obj.name, &pp, &Patch::Apply(&patch))
                    .await?;
            }
            Kind::GatewayClass | Kind::Gateway | Kind::GatewayHttpRoute | Kind::GrpcRoute => {
                self.apply_gateway_status(obj, status).await?;
            }
            _ => {}
        }
        debug!(object = %obj, "status written");
        Ok(())
    }

    /// A Gateway API object's status, as a dynamic object: the answer is
    /// not read, so it need not decode into the generated types.
    async fn apply_gateway_status(
        &self,
        obj: &ObjectRef,
        status: &serde_json::Value,
    ) -> anyhow::Result<()> {
        let kind = obj.kind.api_kind();
        let gvk = kube::api::GroupVersionKind::gvk(portico_crds::gateway::GROUP, "v1", kind);
        let plural = match obj.kind {
            Kind::GatewayClass => "gatewayclasses",
            Kind::Gateway => "gateways",
            Kind::GrpcRoute => "grpcroutes",
            _ => "httproutes",
        };
        let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, plural);
        let api: Api<kube::api::DynamicObject> = if obj.kind == Kind::GatewayClass {
            Api::all_with(self.client.clone(), &resource)
        } else {
            Api::namespaced_with(self.client.clone(), &obj.namespace, &resource)
        };
        let patch = json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": kind,
            "status": status,
        });
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        api.patch_status(&obj.name, &pp, &Patch::Apply(&patch))
            .await?;
        Ok(())
    }

    /// One Warning Event per finding per object generation.
    async fn send_events(&mut self, obj: &ObjectRef, report: &ObjectReport) {
        let entry = self.events_sent.entry(obj.clone()).or_default();
        if entry.0 != report.generation {
            *entry = (report.generation, BTreeSet::new());
        }
        let new: Vec<Diagnostic> = report
            .diagnostics
            .iter()
            .filter(|d| !entry.1.contains(*d))
            .cloned()
            .collect();
        for d in new {
            let reference = object_reference(obj, report);
            let ev = Event {
                type_: if d.severity == Severity::Error || d.severity == Severity::Warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: d.reason.to_owned(),
                note: Some(truncate(&format!("{}: {}", d.field, d.message), 1024)),
                action: "Translate".into(),
                secondary: None,
            };
            match self.recorder.publish(&ev, &reference).await {
                Ok(()) => {
                    if let Some(e) = self.events_sent.get_mut(obj) {
                        e.1.insert(d);
                    }
                }
                Err(e) => warn!(object = %obj, error = %e, "cannot publish Event"),
            }
        }
    }

    async fn refresh_addresses(&mut self) {
        let addresses = if !self.publish_addresses.is_empty() {
            self.publish_addresses
                .iter()
                .map(|a| address_entry(a))
                .collect()
        } else if let Some((ns, name)) = self
            .publish_service
            .as_deref()
            .and_then(|s| s.split_once('/'))
        {
            let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
            match api.get_opt(name).await {
                Ok(Some(svc)) => svc
                    .status
                    .and_then(|s| s.load_balancer)
                    .and_then(|lb| lb.ingress)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|i| IngressLoadBalancerIngress {
                        ip: i.ip,
                        hostname: i.hostname,
                        ports: None,
                    })
                    .collect(),
                Ok(None) => {
                    warn!(service = %format!("{ns}/{name}"), "--publish-service not found");
                    Vec::new()
                }
                Err(e) => {
                    warn!(error = %e, "cannot read --publish-service");
                    return;
                }
            }
        } else {
            Vec::new()
        };
        if addresses != self.addresses {
            self.addresses = addresses;
            // Ingress and Gateway statuses must be rewritten with the new
            // addresses.
            self.written
                .retain(|o, _| !matches!(o.kind, Kind::Ingress | Kind::Gateway));
        }
    }

    /// On shutdown: clear Ingress addresses when no other replica is ready
    /// behind the published Service (its EndpointSlices say so). Without
    /// `--publish-service` there is no way to tell whether other replicas
    /// still serve, and clearing on every rolling update would make the
    /// status flap, so the addresses are kept.
    async fn clear_addresses_if_last(&mut self, t: Option<Arc<Translation>>) {
        let Some(t) = t else { return };
        if self.addresses.is_empty() {
            return;
        }
        let Some((ns, name)) = self
            .publish_service
            .as_deref()
            .and_then(|s| s.split_once('/'))
        else {
            info!(
                "no --publish-service to tell whether other replicas serve; Ingress addresses kept"
            );
            return;
        };
        let api: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
            Api::namespaced(self.client.clone(), ns);
        let lp = kube::api::ListParams::default()
            .labels(&format!("{}={name}", crate::snapshot::SERVICE_NAME_LABEL));
        let others_ready = match api.list(&lp).await {
            Ok(list) => list.items.iter().flat_map(|s| &s.endpoints).any(|e| {
                e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true)
                    && !e
                        .conditions
                        .as_ref()
                        .and_then(|c| c.terminating)
                        .unwrap_or(false)
            }),
            Err(_) => true,
        };
        if others_ready {
            return;
        }
        info!("last replica shutting down: clearing Ingress status addresses");
        self.addresses.clear();
        let cleared = ingress_status(&[]);
        let ours = t
            .reports
            .iter()
            .filter(|(o, r)| o.kind == Kind::Ingress && !r.read_only);
        for (obj, _) in ours {
            if let Err(e) = self.apply_status(obj, &cleared).await {
                warn!(object = %obj, error = %e, "cannot clear Ingress status");
            }
        }
    }
}

fn address_entry(a: &str) -> IngressLoadBalancerIngress {
    let is_ip = a.parse::<std::net::IpAddr>().is_ok();
    IngressLoadBalancerIngress {
        ip: is_ip.then(|| a.to_owned()),
        hostname: (!is_ip).then(|| a.to_owned()),
        ports: None,
    }
}

fn ingress_status(addresses: &[IngressLoadBalancerIngress]) -> serde_json::Value {
    json!({ "loadBalancer": { "ingress": addresses } })
}

/// HTTPRoute conditions. `lastTransitionTime` is kept from what was last
/// written when the condition's status did not change.
pub fn httproute_status(
    report: &ObjectReport,
    previous: Option<&serde_json::Value>,
) -> serde_json::Value {
    let first_error = report
        .diagnostics
        .iter()
        .find(|d| d.severity == Severity::Error && d.reason != "BackendNotFound");
    let accepted = if report.rules_total > 0 && report.rules_served == 0 {
        let d = first_error;
        condition(
            portico_crds::CONDITION_ACCEPTED,
            false,
            d.map_or("UnsupportedValue", |d| d.reason),
            &d.map_or_else(
                || "no rule can be served".into(),
                |d| format!("{}: {}", d.field, d.message),
            ),
            report.generation,
        )
    } else {
        let message = match first_error {
            Some(d) => format!(
                "{} of {} rules served; {}: {}",
                report.rules_served, report.rules_total, d.field, d.message
            ),
            None => format!("{} rules served", report.rules_served),
        };
        condition(
            portico_crds::CONDITION_ACCEPTED,
            true,
            "Accepted",
            &message,
            report.generation,
        )
    };
    // Gateway API: ResolvedRefs is False for a missing backend and for a
    // certificate reference that cannot be used.
    let missing = report.diagnostics.iter().find(|d| {
        d.reason == "BackendNotFound"
            || d.reason == crate::translate::REASON_INVALID_CERTIFICATE_REF
    });
    let resolved = match missing {
        Some(d) => condition(
            portico_crds::CONDITION_RESOLVED_REFS,
            false,
            d.reason,
            &format!("{}: {}", d.field, d.message),
            report.generation,
        ),
        None => condition(
            portico_crds::CONDITION_RESOLVED_REFS,
            true,
            "ResolvedRefs",
            "all backend references resolved",
            report.generation,
        ),
    };
    let mut conditions = vec![accepted, resolved];
    keep_transition_times(&mut conditions, previous.and_then(|p| p.get("conditions")));
    json!({ "conditions": conditions })
}

/// Keeps the transition times of `previous` (a written conditions list)
/// for conditions whose status did not flip.
fn keep_transition_times(conditions: &mut [Condition], previous: Option<&serde_json::Value>) {
    let Some(prev) = previous.and_then(|c| c.as_array()) else {
        return;
    };
    for c in conditions {
        let kept = prev
            .iter()
            .find(|p| p.get("type") == Some(&json!(c.type_)))
            .filter(|p| p.get("status") == Some(&json!(c.status)))
            .and_then(|p| p.get("lastTransitionTime"))
            .and_then(|t| serde_json::from_value::<Time>(t.clone()).ok());
        if let Some(t) = kept {
            c.last_transition_time = t;
        }
    }
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: truncate(message, 32768),
        observed_generation: generation,
        last_transition_time: Time(Timestamp::now()),
    }
}

/// Status without transition times (at any depth: Gateway listeners and
/// route parents nest conditions), to compare content.
fn comparable(v: &serde_json::Value) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(o) => {
                o.remove("lastTransitionTime");
                o.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v = v.clone();
    strip(&mut v);
    v
}

fn object_reference(obj: &ObjectRef, report: &ObjectReport) -> ObjectReference {
    let api_version = match obj.kind {
        Kind::Ingress | Kind::IngressClass => "networking.k8s.io/v1",
        Kind::HttpRoute => "portico.dev/v1alpha1",
        Kind::EndpointSlice => "discovery.k8s.io/v1",
        Kind::Service | Kind::Secret => "v1",
        Kind::GatewayClass | Kind::Gateway | Kind::GatewayHttpRoute | Kind::GrpcRoute => {
            "gateway.networking.k8s.io/v1"
        }
        Kind::ReferenceGrant => "gateway.networking.k8s.io/v1beta1",
    };
    ObjectReference {
        api_version: Some(api_version.into()),
        kind: Some(obj.kind.api_kind().into()),
        namespace: Some(obj.namespace.clone()).filter(|n| !n.is_empty()),
        name: Some(obj.name.clone()),
        uid: report.uid.clone(),
        ..Default::default()
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests;
