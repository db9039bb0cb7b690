//! Upstream metrics, read from the live table at scrape time: one series
//! per endpoint (and per backend where the backend matters), never per
//! route, and gone when the endpoint leaves every table. Nothing here runs
//! on the request path; the counters it reads are the endpoints' atomics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::HealthShared;
use crate::route::table::RouteTable;

pub(crate) struct UpstreamCollector {
    pub(crate) table: Arc<ArcSwap<RouteTable>>,
    pub(crate) health: Arc<HealthShared>,
}

impl std::fmt::Debug for UpstreamCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamCollector")
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct BackendEndpoint {
    backend: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct CheckResult {
    endpoint: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct BackendLabel {
    backend: String,
}

/// Reads one counter of [`EndpointCounts`].
type CountOf = fn(&EndpointCounts) -> u64;

#[derive(Default)]
struct EndpointCounts {
    requests: u64,
    in_flight: u64,
    ejections: u64,
    checks_ok: u64,
    checks_failed: u64,
}

impl Collector for UpstreamCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let table = self.table.load_full();
        let now = self.health.now_ms();
        let mut healthy: BTreeMap<BackendEndpoint, i64> = BTreeMap::new();
        // By address: endpoints of the same address with other protocol or
        // TLS settings are added up under it.
        let mut endpoints: BTreeMap<String, EndpointCounts> = BTreeMap::new();
        let mut seen = std::collections::HashSet::new();
        let mut budgets: BTreeMap<BackendLabel, (u64, u64)> = BTreeMap::new();
        let mut seen_budgets = std::collections::HashSet::new();
        for b in table.backends() {
            for ep in b.balancer.endpoints() {
                let endpoint = ep.addr().to_string();
                let eligible = ep.health.is_eligible(now);
                healthy
                    .entry(BackendEndpoint {
                        backend: b.name.to_string(),
                        endpoint: endpoint.clone(),
                    })
                    .or_insert(i64::from(eligible));
                if seen.insert(Arc::as_ptr(ep)) {
                    let h = &ep.health;
                    let c = endpoints.entry(endpoint).or_default();
                    c.requests += h.requests.load(Ordering::Relaxed);
                    c.in_flight += h.in_flight();
                    c.ejections += h.ejections_total.load(Ordering::Relaxed);
                    c.checks_ok += h.checks_ok.load(Ordering::Relaxed);
                    c.checks_failed += h.checks_failed.load(Ordering::Relaxed);
                }
            }
            if seen_budgets.insert(Arc::as_ptr(&b.budget)) {
                let (retries, exhausted) = b.budget.counts();
                let e = budgets
                    .entry(BackendLabel {
                        backend: b.name.to_string(),
                    })
                    .or_default();
                e.0 += retries;
                e.1 += exhausted;
            }
        }

        let mut m = encoder.encode_descriptor(
            "upstream_endpoint_healthy",
            "1 when the endpoint takes requests (ready, passing active health checks, not ejected), by backend and endpoint",
            None,
            MetricType::Gauge,
        )?;
        for (labels, v) in &healthy {
            m.encode_family(labels)?.encode_gauge(v)?;
        }
        let counters: [(&str, &str, CountOf); 2] = [
            (
                "upstream_endpoint_requests",
                "Attempts sent to the endpoint, retries included",
                |c| c.requests,
            ),
            (
                "upstream_endpoint_ejections",
                "Times passive outlier detection ejected the endpoint",
                |c| c.ejections,
            ),
        ];
        for (name, help, get) in counters {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (endpoint, c) in &endpoints {
                let labels = EndpointLabel {
                    endpoint: endpoint.clone(),
                };
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&get(c), None)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "upstream_endpoint_in_flight",
            "Requests sent to the endpoint and not yet answered in full",
            None,
            MetricType::Gauge,
        )?;
        for (endpoint, c) in &endpoints {
            let labels = EndpointLabel {
                endpoint: endpoint.clone(),
            };
            m.encode_family(&labels)?
                .encode_gauge(&i64::try_from(c.in_flight).unwrap_or(i64::MAX))?;
        }
        let mut m = encoder.encode_descriptor(
            "upstream_health_checks",
            "Active health-check probes, by endpoint and result (pass, fail)",
            None,
            MetricType::Counter,
        )?;
        for (endpoint, c) in &endpoints {
            if c.checks_ok + c.checks_failed == 0 {
                continue;
            }
            for (result, v) in [("pass", c.checks_ok), ("fail", c.checks_failed)] {
                let labels = CheckResult {
                    endpoint: endpoint.clone(),
                    result,
                };
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "upstream_retries",
            "Retries of failed attempts on another endpoint, by backend",
            None,
            MetricType::Counter,
        )?;
        for (labels, (retries, _)) in &budgets {
            m.encode_family(labels)?
                .encode_counter::<NoLabelSet, _, u64>(retries, None)?;
        }
        let mut m = encoder.encode_descriptor(
            "upstream_retry_budget_exhausted",
            "Retries not made because the backend's retry budget was spent",
            None,
            MetricType::Counter,
        )?;
        for (labels, (_, exhausted)) in &budgets {
            m.encode_family(labels)?
                .encode_counter::<NoLabelSet, _, u64>(exhausted, None)?;
        }
        Ok(())
    }
}
