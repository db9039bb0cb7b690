//! Gateway API listener ports: ports served beside the main HTTP and HTTPS
//! listeners, each with routes of its own.
//!
//! The main listeners serve [`RouteConfig::routes`] (Ingresses, `portico.dev`
//! HTTPRoutes, and Gateway listeners whose port is a main listener's). A
//! Gateway listener on any other port becomes a [`GatewayPort`]: the
//! dataplane opens its socket when a publish first names the port and closes
//! it when a publish no longer does, and a request that comes in on it is
//! routed among that port's routes only. Listeners of several Gateways on one
//! port share it: their routes are isolated by the listeners' hostnames,
//! which translation has already intersected into each route's
//! [`Route::hostnames`].

#[allow(unused_imports)]
use super::*;

/// One port opened for Gateway listeners, and what is served on it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GatewayPort {
    /// The port the dataplane binds, on the Gateway address
    /// (`DataplaneConfig::gateway_address`; after `--gateway-port-offset`).
    /// Never a main listener's port: translation puts those listeners'
    /// routes into [`RouteConfig::routes`], and the table build refuses
    /// such a port, as it does a port listed twice.
    pub port: u16,
    pub protocol: PortProtocol,
    /// Served on this port only. Hostnames are the intersection of each
    /// route's and its listener's; a route of a listener without a hostname
    /// and without hostnames of its own serves the port's default virtual
    /// host.
    #[serde(default)]
    pub routes: Vec<Arc<Route>>,
}

/// As [`RouteConfig`]'s: a shared route is equal to itself.
impl PartialEq for GatewayPort {
    fn eq(&self, other: &Self) -> bool {
        let Self {
            port,
            protocol,
            routes,
        } = self;
        *port == other.port && *protocol == other.protocol && same_routes(routes, &other.routes)
    }
}

impl GatewayPort {
    /// A port serving `routes` in `protocol`.
    pub fn new(port: u16, protocol: PortProtocol, routes: Vec<Route>) -> Self {
        Self {
            port,
            protocol,
            routes: routes.into_iter().map(Route::into_shared).collect(),
        }
    }
}

/// What a [`GatewayPort`] speaks. Two Gateway listeners of one port must
/// agree on it (translation reports the second as `Conflicted`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PortProtocol {
    /// Cleartext HTTP/1.1, and HTTP/2 with prior knowledge (h2c).
    Http,
    /// TLS terminated with the port's certificates
    /// (`listen::tls::PortCerts`), then HTTP/1.1 or HTTP/2 by ALPN.
    Https,
}
