//! One test's world: its own control plane, its own namespace, the chart's
//! RBAC applied, and a kubeconfig for the chart's ServiceAccount.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::chart::Chart;
use crate::control_plane::ControlPlane;
use crate::upstream::Upstream;

/// A binary built by `make e2e-tools`; an error naming the target to run
/// when it is missing (the e2e tests never skip).
pub fn tool(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("PORTICO_E2E_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/bin"));
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: run `make e2e-tools` (or set PORTICO_E2E_BIN_DIR)",
            path.display()
        );
    }
    Ok(path)
}

pub struct TestEnv {
    pub plane: ControlPlane,
    pub admin: Client,
    /// The test's namespace; also the chart's release name and namespace.
    pub namespace: String,
    pub chart: Chart,
    /// Kubeconfig of the chart's ServiceAccount (bearer token).
    pub portico_kubeconfig: PathBuf,
}

impl TestEnv {
    /// A fresh control plane with the HTTPRoute CRD, the namespace
    /// `namespace`, and the chart rendered with `values` (`--set` pairs)
    /// whose ServiceAccount, RBAC and IngressClass are applied.
    pub async fn start(namespace: &str, values: &[&str]) -> anyhow::Result<Self> {
        let plane = ControlPlane::start().await?;
        let admin = plane.admin_client().await?;
        let ns: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace},
        }))?;
        crate::apply(&admin, &ns).await?;
        let chart = Chart::render(namespace, namespace, values)?;
        for doc in chart.crds()? {
            crate::apply_json(&admin, &doc, false).await?;
        }
        crate::objects::wait_for_crd(&admin, "httproutes.portico.dev").await?;
        for doc in chart.of_kinds(&[
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "IngressClass",
        ]) {
            crate::apply_json(&admin, doc, false).await?;
        }
        let portico_kubeconfig = service_account_kubeconfig(&plane, &admin, namespace, &chart)
            .await
            .context("kubeconfig for the chart's ServiceAccount")?;
        Ok(Self {
            plane,
            admin,
            namespace: namespace.to_owned(),
            chart,
            portico_kubeconfig,
        })
    }

    /// A real upstream answering `<name> <path>`, with the Service `name`
    /// and the EndpointSlice the EndpointSlice controller would write.
    pub async fn backend(&self, name: &str) -> anyhow::Result<Upstream> {
        self.backend_in(&self.namespace, name).await
    }

    /// A gRPC upstream (the testkit's `Echo` service, h2c) behind the
    /// Service `name` in the test's namespace; its address.
    pub async fn grpc_backend(&self, name: &str) -> anyhow::Result<std::net::SocketAddr> {
        let addr = crate::upstream::grpc_upstream().await?;
        let ns = &self.namespace;
        crate::apply(&self.admin, &crate::service(ns, name, addr.port())).await?;
        crate::apply(&self.admin, &crate::endpoint_slice(ns, name, &[addr])).await?;
        Ok(addr)
    }

    /// [`Self::backend`] in namespace `ns` (which must exist).
    pub async fn backend_in(&self, ns: &str, name: &str) -> anyhow::Result<Upstream> {
        let upstream = Upstream::start(name).await?;
        crate::apply(&self.admin, &crate::service(ns, name, upstream.addr.port())).await?;
        crate::apply(
            &self.admin,
            &crate::endpoint_slice(ns, name, &[upstream.addr]),
        )
        .await?;
        Ok(upstream)
    }
}

async fn service_account_kubeconfig(
    plane: &ControlPlane,
    admin: &Client,
    namespace: &str,
    chart: &Chart,
) -> anyhow::Result<PathBuf> {
    let sa = chart
        .of_kinds(&["ServiceAccount"])
        .next()
        .context("the chart renders no ServiceAccount")?;
    let sa: ServiceAccount = serde_json::from_value(sa.clone())?;
    let api: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = api
        .create_token_request(&sa.name_any(), &PostParams::default(), &request)
        .await?
        .status
        .context("TokenRequest without status")?
        .token;
    let path = plane.dir().join(format!("{namespace}-portico.kubeconfig"));
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: portico\n  user:\n    token: {token}\ncontexts:\n- name: e2e\n  context:\n    cluster: e2e\n    user: portico\n    namespace: {namespace}\ncurrent-context: e2e\n",
        server = plane.server_url(),
        ca = plane.ca_cert().display(),
    );
    std::fs::write(&path, yaml)?;
    Ok(path)
}
