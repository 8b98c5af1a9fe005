//! `spec.loadBalancerClass`: which Services one ferrolb installation handles. The
//! controller and the speaker read `--lb-class` through [`from_flag`] and compare with
//! [`handles`], so they always agree on which Services are theirs.

use k8s_openapi::api::core::v1::Service;

/// The class given by `--lb-class` (or `FERROLB_LB_CLASS`): an empty or blank value
/// means no class, exactly as if the flag were absent.
pub fn from_flag(flag: Option<&str>) -> Option<String> {
    flag.map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
}

/// The Service's `spec.loadBalancerClass` (an empty value counts as none).
pub fn of(svc: &Service) -> Option<&str> {
    svc.spec
        .as_ref()?
        .load_balancer_class
        .as_deref()
        .filter(|c| !c.is_empty())
}

/// Whether a Service of class `class` belongs to an installation running with `ours`
/// (both as normalized by [`from_flag`] / [`of`]): the same class, or both none.
pub fn matches(class: Option<&str>, ours: Option<&str>) -> bool {
    class == ours.filter(|c| !c.is_empty())
}

/// Whether `svc` is a LoadBalancer Service of class `ours`.
pub fn handles(svc: &Service, ours: Option<&str>) -> bool {
    svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
        && matches(of(svc), ours)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceSpec;

    fn svc(type_: &str, class: Option<&str>) -> Service {
        Service {
            spec: Some(ServiceSpec {
                type_: Some(type_.into()),
                load_balancer_class: class.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn an_empty_flag_means_no_class() {
        assert_eq!(from_flag(None), None);
        assert_eq!(from_flag(Some("")), None);
        assert_eq!(from_flag(Some("  ")), None);
        assert_eq!(from_flag(Some("ferrolb")), Some("ferrolb".into()));
        // `--lb-class=` handles the classless Services, like no flag at all.
        let flag = from_flag(Some(""));
        assert!(handles(&svc("LoadBalancer", None), flag.as_deref()));
        assert!(!handles(&svc("LoadBalancer", Some("x")), flag.as_deref()));
    }

    #[test]
    fn class_and_type_decide() {
        let ours = Some("ferrolb");
        assert!(handles(&svc("LoadBalancer", Some("ferrolb")), ours));
        assert!(!handles(&svc("LoadBalancer", None), ours));
        assert!(!handles(&svc("LoadBalancer", Some("other")), ours));
        assert!(!handles(&svc("ClusterIP", Some("ferrolb")), ours));
        assert!(handles(&svc("LoadBalancer", Some("")), None));
        assert!(!handles(&Service::default(), None));
        assert_eq!(of(&svc("ClusterIP", Some("x"))), Some("x"));
    }
}
