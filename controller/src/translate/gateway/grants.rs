//! ReferenceGrant: a reference from one namespace to an object in another
//! is allowed only by a grant in the target's namespace naming the
//! referrer's group, kind and namespace and the target's group, kind and
//! (optionally) name. Read from the snapshot on every translation, so
//! deleting a grant withdraws it with the next one.

use crate::snapshot::Snapshot;

/// Whether `from` (group, kind, namespace) may refer to `to` (group, kind,
/// namespace, name). The core group is `""`.
pub(super) fn permits(
    snap: &Snapshot,
    from: (&str, &str, &str),
    to: (&str, &str, &str, &str),
) -> bool {
    let (from_group, from_kind, from_ns) = from;
    let (to_group, to_kind, to_ns, to_name) = to;
    snap.reference_grants
        .iter()
        .filter(|g| g.metadata.namespace.as_deref() == Some(to_ns))
        .any(|g| {
            g.spec
                .from
                .iter()
                .any(|f| f.group == from_group && f.kind == from_kind && f.namespace == from_ns)
                && g.spec.to.iter().any(|t| {
                    t.group == to_group
                        && t.kind == to_kind
                        && t.name
                            .as_deref()
                            .is_none_or(|n| n.is_empty() || n == to_name)
                })
        })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use portico_crds::gateway::ReferenceGrant;

    use super::*;
    use crate::snapshot::Object;

    fn grant(yaml: &str) -> Object {
        Object::ReferenceGrant(Arc::new(
            serde_yaml::from_str::<ReferenceGrant>(yaml).unwrap(),
        ))
    }

    #[test]
    fn a_grant_names_the_referrer_and_the_target() {
        let snap = Snapshot::from_objects([grant(
            "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: backends}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}]\n  to: [{group: '', kind: Service, name: web}]\n",
        )]);
        let route = ("gateway.networking.k8s.io", "HTTPRoute", "apps");
        assert!(permits(&snap, route, ("", "Service", "backends", "web")));
        // Another name, namespace, referrer kind or referrer namespace: no.
        assert!(!permits(&snap, route, ("", "Service", "backends", "api")));
        assert!(!permits(&snap, route, ("", "Service", "other", "web")));
        assert!(!permits(
            &snap,
            ("gateway.networking.k8s.io", "GRPCRoute", "apps"),
            ("", "Service", "backends", "web")
        ));
        assert!(!permits(
            &snap,
            ("gateway.networking.k8s.io", "HTTPRoute", "shop"),
            ("", "Service", "backends", "web")
        ));
        // No grant at all: no.
        assert!(!permits(
            &Snapshot::default(),
            route,
            ("", "Service", "backends", "web")
        ));
    }
}
