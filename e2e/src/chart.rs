//! The Helm chart rendered by the real `helm template`, as JSON documents.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde::Deserialize;

pub struct Chart {
    pub dir: PathBuf,
    pub docs: Vec<serde_json::Value>,
}

impl Chart {
    pub fn dir() -> PathBuf {
        std::env::var_os("PORTICO_CHART")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/portico"))
    }

    /// `helm template <release> <chart> --namespace <ns> --set <v>...`.
    pub fn render(release: &str, namespace: &str, values: &[&str]) -> anyhow::Result<Self> {
        let dir = Self::dir();
        let mut cmd = Command::new(crate::tool("helm")?);
        cmd.arg("template")
            .arg(release)
            .arg(&dir)
            .args(["--namespace", namespace]);
        for v in values {
            cmd.args(["--set", v]);
        }
        let text = helm_output(&mut cmd)?;
        Ok(Self {
            dir,
            docs: parse_documents(&text)?,
        })
    }

    /// Rendered documents of the given kinds, in chart order.
    pub fn of_kinds<'a>(
        &'a self,
        kinds: &'a [&str],
    ) -> impl Iterator<Item = &'a serde_json::Value> + 'a {
        self.docs
            .iter()
            .filter(move |d| kinds.iter().any(|k| d["kind"] == *k))
    }

    /// The CRDs under the chart's `crds/` (helm installs them first).
    pub fn crds(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let mut docs = Vec::new();
        for entry in std::fs::read_dir(self.dir.join("crds"))? {
            let path = entry?.path();
            let text = std::fs::read_to_string(&path)?;
            docs.extend(parse_documents(&text)?);
        }
        Ok(docs)
    }
}

/// Runs a helm command; its stdout, or an error with its stderr.
pub fn helm_output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().context("running helm")?;
    if !out.status.success() {
        bail!(
            "helm failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

pub(crate) fn parse_documents(text: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut docs = Vec::new();
    for de in serde_yaml::Deserializer::from_str(text) {
        let v = serde_json::Value::deserialize(de)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}
