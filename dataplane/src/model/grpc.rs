//! gRPC and gRPC-Web options of a rule.

#[allow(unused_imports)]
use super::*;

/// Largest message a gRPC client may send unless a rule says otherwise:
/// gRPC's own default receive limit.
pub const DEFAULT_GRPC_MAX_MESSAGE: u64 = 4 * 1024 * 1024;

/// How a rule treats gRPC calls (`application/grpc*` requests) and, when it
/// bridges them, gRPC-Web ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GrpcOptions {
    /// Largest message (in bytes, after base64 decoding) a client may send;
    /// a larger one ends the call with RESOURCE_EXHAUSTED.
    #[serde(default = "default_grpc_max_message")]
    pub max_message: u64,
    /// Bridge gRPC-Web requests to gRPC. `None`: gRPC-Web requests are
    /// forwarded as they are (the backend may speak gRPC-Web itself).
    #[serde(default)]
    pub web: Option<GrpcWeb>,
}

fn default_grpc_max_message() -> u64 {
    DEFAULT_GRPC_MAX_MESSAGE
}

impl Default for GrpcOptions {
    fn default() -> Self {
        Self {
            max_message: DEFAULT_GRPC_MAX_MESSAGE,
            web: None,
        }
    }
}

/// The gRPC-Web bridge of a rule. Its browser access (CORS) is a
/// [`Filter::Cors`] on the rule's chain, set up from [`Cors::grpc_web`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GrpcWeb {}
