//! What translation could not accept, per object: the raw material of
//! Kubernetes Events, status conditions and `portico validate` output.

use std::fmt;

/// The object a diagnostic is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Ingress,
    HttpRoute,
    IngressClass,
    Service,
    EndpointSlice,
    Secret,
    GatewayClass,
    Gateway,
    /// Gateway API's HTTPRoute (`gateway.networking.k8s.io`), apart from
    /// Portico's own ([`Kind::HttpRoute`]).
    GatewayHttpRoute,
    GrpcRoute,
    ReferenceGrant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Part of the object is not served as written.
    Error,
    /// Served, but something was ignored or may not be what was meant.
    Warning,
}

/// One finding, naming the field and the reason.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Diagnostic {
    pub severity: Severity,
    /// A CamelCase reason, as Events and conditions carry it
    /// (`BackendNotFound`, `InvalidRegex`, `InvalidAnnotation`).
    pub reason: &'static str,
    /// Where in the object: `spec.rules[0].http.paths[1].path`, or
    /// `metadata.annotations[nginx.ingress.kubernetes.io/rewrite-target]`.
    pub field: String,
    pub message: String,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

impl Kind {
    /// The `kind` field of the object's API type.
    pub fn api_kind(self) -> &'static str {
        match self {
            Kind::GatewayHttpRoute => "HTTPRoute",
            other => other.as_str(),
        }
    }

    /// The kind as shown to people: Gateway API's HTTPRoute is named with
    /// its group, apart from Portico's own.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ingress => "Ingress",
            Kind::HttpRoute => "HTTPRoute",
            Kind::IngressClass => "IngressClass",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Secret => "Secret",
            Kind::GatewayClass => "GatewayClass",
            Kind::Gateway => "Gateway",
            Kind::GatewayHttpRoute => "HTTPRoute.gateway.networking.k8s.io",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind.as_str(), self.name)
        } else {
            write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}: {}",
            self.severity, self.reason, self.field, self.message
        )
    }
}

impl Diagnostic {
    pub fn error(
        reason: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Error,
            reason,
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn warning(
        reason: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Warning,
            reason,
            field: field.into(),
            message: message.into(),
        }
    }
}
