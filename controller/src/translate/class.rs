//! Which Ingresses are ours.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::ResourceExt;

use super::Settings;

/// The legacy annotation that named a class before `spec.ingressClassName`.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// Marks the IngressClass used by Ingresses that name none.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// An Ingress is ours when `spec.ingressClassName` names an IngressClass whose
/// controller is ours; or, without a class name, when the legacy annotation
/// names our class; or, with neither, when one of our IngressClasses is the
/// default or `--watch-ingress-without-class` is set.
/// Ingresses of `--watch-ingress-class` classes are served too, read-only
/// ([`is_side_by_side`]).
pub fn ingress_is_ours(
    ingress: &Ingress,
    classes: &BTreeMap<String, Arc<IngressClass>>,
    settings: &Settings,
) -> bool {
    class_verdict(ingress, classes, settings).is_ok()
}

/// Whether an Ingress is served read-only: not ours, but of a class named
/// in `--watch-ingress-class` (side-by-side with another controller). Such
/// an Ingress is routed like ours, but Portico writes no status and sends
/// no Events for it: the other controller still owns it.
pub fn is_side_by_side(
    ingress: &Ingress,
    classes: &BTreeMap<String, Arc<IngressClass>>,
    settings: &Settings,
) -> bool {
    !settings.side_by_side_classes.is_empty()
        && own_verdict(ingress, classes, settings).is_err()
        && named_class(ingress).is_some_and(|c| settings.side_by_side_classes.contains(c))
}

/// The class an Ingress names: `spec.ingressClassName`, else the legacy
/// annotation.
fn named_class(ingress: &Ingress) -> Option<&str> {
    ingress
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref())
        .or_else(|| {
            ingress
                .annotations()
                .get(LEGACY_CLASS_ANNOTATION)
                .map(|v| v.trim())
        })
}

/// [`ingress_is_ours`], with the reason when it is not, for `portico validate`.
/// Ingresses served side by side ([`is_side_by_side`]) count as served.
pub fn class_verdict(
    ingress: &Ingress,
    classes: &BTreeMap<String, Arc<IngressClass>>,
    settings: &Settings,
) -> Result<(), String> {
    let verdict = own_verdict(ingress, classes, settings);
    if verdict.is_err()
        && named_class(ingress).is_some_and(|c| settings.side_by_side_classes.contains(c))
    {
        return Ok(());
    }
    verdict
}

/// Whether an Ingress is Portico's own (read-write).
fn own_verdict(
    ingress: &Ingress,
    classes: &BTreeMap<String, Arc<IngressClass>>,
    settings: &Settings,
) -> Result<(), String> {
    if let Some(name) = ingress
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref())
    {
        return match classes.get(name) {
            Some(class) if class_is_ours(class, settings) => Ok(()),
            Some(class) => Err(format!(
                "IngressClass {name} belongs to controller {:?}, not {}",
                class
                    .spec
                    .as_ref()
                    .and_then(|s| s.controller.as_deref())
                    .unwrap_or_default(),
                settings.controller_name
            )),
            None => Err(format!("IngressClass {name} does not exist")),
        };
    }
    if let Some(legacy) = ingress.annotations().get(LEGACY_CLASS_ANNOTATION) {
        return if legacy.trim() == settings.ingress_class {
            Ok(())
        } else {
            Err(format!(
                "{LEGACY_CLASS_ANNOTATION} is {:?}, not {:?}",
                legacy.trim(),
                settings.ingress_class
            ))
        };
    }
    let default_is_ours = classes
        .values()
        .any(|class| class_is_ours(class, settings) && is_default_class(class));
    if settings.watch_ingress_without_class || default_is_ours {
        Ok(())
    } else {
        Err(
            "no ingress class, and no IngressClass of ours is the default \
             (--watch-ingress-without-class is off)"
                .into(),
        )
    }
}

/// The IngressClass Portico would own under `settings`: what `portico
/// validate` and the admission webhook assume when they see no
/// IngressClass objects (the chart installs it).
pub fn assumed_class(settings: &Settings) -> IngressClass {
    IngressClass {
        metadata: kube::api::ObjectMeta {
            name: Some(settings.ingress_class.clone()),
            ..Default::default()
        },
        spec: Some(k8s_openapi::api::networking::v1::IngressClassSpec {
            controller: Some(settings.controller_name.clone()),
            parameters: None,
        }),
    }
}

pub fn class_is_ours(class: &IngressClass, settings: &Settings) -> bool {
    class
        .spec
        .as_ref()
        .and_then(|s| s.controller.as_deref())
        .is_some_and(|c| c == settings.controller_name)
}

fn is_default_class(class: &IngressClass) -> bool {
    class
        .annotations()
        .get(DEFAULT_CLASS_ANNOTATION)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}
