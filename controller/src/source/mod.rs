//! Where objects come from: the Kubernetes API (watch caches) or a directory
//! of manifest files. Both feed the same translation.

pub mod cluster;
pub mod dns;
pub mod manifests;
