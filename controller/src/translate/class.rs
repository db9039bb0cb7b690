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
pub fn ingress_is_ours(
    ingress: &Ingress,
    classes: &BTreeMap<String, Arc<IngressClass>>,
    settings: &Settings,
) -> bool {
    class_verdict(ingress, classes, settings).is_ok()
}

/// [`ingress_is_ours`], with the reason when it is not, for `portico validate`.
pub fn class_verdict(
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
