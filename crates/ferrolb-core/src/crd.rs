//! `metallb.io/v1beta1` CustomResourceDefinitions: [`IPAddressPool`], [`L2Advertisement`]
//! and [`ServiceL2Status`], wire-compatible with MetalLB (same group, version, kinds,
//! field names, defaults and printer columns), so existing manifests apply unchanged.
//!
//! Per-object rules the API server can check itself are part of the schema
//! (`minItems`, `minimum`/`maximum`, `x-kubernetes-validations` CEL). Everything that
//! needs several objects at once (overlaps, duplicate names, …) lives in
//! [`crate::config::validate`].
//!
//! `crds/` holds the generated YAML; `crates/ferrolb/tests/it/crds.rs` fails when it is stale
//! (regenerate with `UPDATE_CRDS=1 cargo test --test it crds`).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

fn default_true() -> bool {
    true
}

fn is_false(b: &bool) -> bool {
    !*b
}

// ---------------------------------------------------------------------------
// IPAddressPool
// ---------------------------------------------------------------------------

/// `spec` of an `IPAddressPool`: a set of addresses the controller may hand out.
// `printcolumn(...)` repeats keys by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "IPAddressPool",
    plural = "ipaddresspools",
    namespaced,
    status = "IPAddressPoolStatus",
    doc = "IPAddressPool represents a pool of IP addresses that can be allocated to LoadBalancer services.",
    printcolumn(
        name = "Auto Assign",
        type_ = "boolean",
        json_path = ".spec.autoAssign"
    ),
    printcolumn(
        name = "Avoid Buggy IPs",
        type_ = "boolean",
        json_path = ".spec.avoidBuggyIPs"
    ),
    printcolumn(name = "Addresses", type_ = "string", json_path = ".spec.addresses")
)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolSpec {
    /// A list of IP address ranges over which MetalLB has authority. You can list
    /// multiple ranges in a single pool, they will all share the same settings. Each
    /// range can be either a CIDR prefix (`192.168.10.0/24`, `fc00::/124`, a single
    /// address as `/32` or `/128`), or an explicit start-end range of IPs
    /// (`192.168.9.1-192.168.9.5`).
    #[schemars(schema_with = "addresses_schema")]
    pub addresses: Vec<String>,

    /// AutoAssign flag used to prevent MetalLB from automatic allocation for a pool.
    #[serde(default = "default_true")]
    pub auto_assign: bool,

    /// AvoidBuggyIPs prevents addresses ending with .0 and .255 to be used by a pool.
    #[serde(default, rename = "avoidBuggyIPs", skip_serializing_if = "is_false")]
    pub avoid_buggy_ips: bool,

    /// AllocateTo makes ip pool allocation to specific namespace and/or service.
    /// The controller will use the pool with lowest value of priority in case of
    /// multiple matches. A pool with no priority set will be used only if the
    /// pools with priority can't be used. If multiple matching IPAddressPools are
    /// available it will check for the availability of IPs sorting the matching
    /// IPAddressPools by priority, starting from the highest to the lowest. If
    /// multiple IPAddressPools have the same priority, choice will be random.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocationSpec>,
}

/// Most entries one pool may list. Bounds the API server's estimated CEL cost of the
/// per-entry rules (cost of one entry × this), which must stay under its per-rule limit.
pub const MAX_POOL_ADDRESSES: u32 = 1000;

/// Longest entry, in characters: the longest valid one (two IPv4-mapped IPv6 addresses in
/// full form and a `-`) is 91; the rest leaves room for whitespace around the `-`.
pub const MAX_ADDRESS_LENGTH: u32 = 128;

/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, `0:0:0:0:0:ffff:a00:1`): ferrolb and
/// MetalLB accept it; the API server's `isIP`/`ip()` reject it. Entries holding one are
/// left to the controller (the rules below never reject what the controller accepts).
const MAPPED: &str = "'^[0:]*:[fF]{4}:'";

/// The CEL rules checked by the API server on every `spec.addresses` entry (`self`), each
/// a `(rule, messageExpression)` pair. Together they accept a superset of what
/// [`crate::config::address::parse_entry`] accepts, and their messages are its messages.
///
/// * a CIDR: no surrounding whitespace, an IP address (`isIP`), a prefix length of digits
///   no longer than the family allows (leading zeros allowed, as in MetalLB);
/// * a range `start-end`: both ends IP addresses of one family; for IPv4, `start <= end`
///   (CEL has no order on IPs; an IPv6 range in reverse is left to the controller).
pub fn address_rules() -> [(String, String); 2] {
    // CIDR: the address before the first `/`, the prefix length after it.
    let addr = "self.substring(0, self.indexOf('/'))";
    let len = "self.substring(self.indexOf('/') + 1)";
    let cidr_rule = format!(
        "self.contains('-') || self.matches({MAPPED}) || (self.trim() == self && self.contains('/') \
         && isIP({addr}) && {len}.matches('^0*[0-9]{{1,3}}$') \
         && int({len}) <= (ip({addr}).family() == 4 ? 32 : 128))"
    );
    let cidr_message = format!(
        "'invalid CIDR \"' + self + '\": ' + (\
         self.trim() != self ? 'leading or trailing whitespace' \
         : !self.contains('/') ? 'missing \"/prefix-length\"' + (isIP(self) ? ' (write a single address as ' \
           + self + (ip(self).family() == 4 ? '/32' : '/128') + ')' : '') \
         : !isIP({addr}) ? '\"' + {addr} + '\" is not an IP address' \
         : !{len}.matches('^[0-9]+$') ? 'prefix length \"' + {len} + '\" is not a number between 0 and ' \
           + (ip({addr}).family() == 4 ? '32' : '128') \
         : 'prefix length ' + {len} + (ip({addr}).family() == 4 \
           ? ' is longer than 32, the maximum for IPv4' : ' is longer than 128, the maximum for IPv6'))"
    );
    // Range: both sides of the first `-`, trimmed.
    let start = "self.substring(0, self.indexOf('-')).trim()";
    let end = "self.substring(self.indexOf('-') + 1).trim()";
    let v4 = |x: &str| {
        format!(
            "(int({x}.split('.')[0]) * 16777216 + int({x}.split('.')[1]) * 65536 \
             + int({x}.split('.')[2]) * 256 + int({x}.split('.')[3]))"
        )
    };
    let range_rule = format!(
        "!self.contains('-') || {start}.matches({MAPPED}) || {end}.matches({MAPPED}) \
         || (isIP({start}) && isIP({end}) && ip({start}).family() == ip({end}).family() \
         && (ip({start}).family() == 6 || {} <= {}))",
        v4(start),
        v4(end)
    );
    let range_message = format!(
        "'invalid IP range \"' + self + '\": ' + (\
         !isIP({start}) ? 'start \"' + {start} + '\" is not an IP address' \
         : !isIP({end}) ? 'end \"' + {end} + '\" is not an IP address' \
         : ip({start}).family() != ip({end}).family() ? 'start \"' + {start} + '\" and end \"' + {end} \
           + '\" are not of the same IP family' \
         : 'start IP \"' + {start} + '\" is after the end IP \"' + {end} + '\"')"
    );
    [(cidr_rule, cidr_message), (range_rule, range_message)]
}

/// Schema of `spec.addresses`: at least one entry, each checked by [`address_rules`].
fn addresses_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let rules: Vec<serde_json::Value> = address_rules()
        .into_iter()
        .zip([
            "must be a CIDR such as 192.168.10.0/24 or fc00::/124",
            "must be a range start-end of two IP addresses of one family, start first",
        ])
        .map(|((rule, message_expression), message)| {
            serde_json::json!({
                "rule": rule,
                "messageExpression": message_expression,
                "message": message,
            })
        })
        .collect();
    schemars::json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_POOL_ADDRESSES,
        "items": {
            "type": "string",
            "maxLength": MAX_ADDRESS_LENGTH,
            "x-kubernetes-validations": rules,
        },
    })
}

/// `spec.serviceAllocation` of an `IPAddressPool` (MetalLB's `ServiceAllocation`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocationSpec {
    /// Priority priority given for ip pool while ip allocation on a service.
    /// Lower is preferred; 0 (unset) is used last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,

    /// Namespaces list of namespace(s) on which ip pool can be attached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,

    /// NamespaceSelectors list of label selectors to select namespace(s) for ip pool,
    /// an alternative to using namespace list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_selectors: Vec<LabelSelector>,

    /// ServiceSelectors list of label selector to select service(s) for which ip pool
    /// can be used for ip allocation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}

/// `status` of an `IPAddressPool`, written by the controller and read by the speakers.
// Parsed leniently (see `lenient`): a field that is missing or of another shape (a MetalLB
// controller, another ferrolb version or a human may have written it) reads as its default
// instead of failing the whole object, so it can never break a watch.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(remote = "Self", rename_all = "camelCase")]
#[schemars(rename = "IPAddressPoolStatus")]
pub struct IPAddressPoolStatus {
    /// AssignedIPv4 is the number of assigned IPv4 addresses.
    #[serde(rename = "assignedIPv4", default, deserialize_with = "lenient::value")]
    pub assigned_ipv4: i64,
    /// AssignedIPv6 is the number of assigned IPv6 addresses.
    #[serde(rename = "assignedIPv6", default, deserialize_with = "lenient::value")]
    pub assigned_ipv6: i64,
    /// AvailableIPv4 is the number of available IPv4 addresses.
    #[serde(rename = "availableIPv4", default, deserialize_with = "lenient::value")]
    pub available_ipv4: i64,
    /// AvailableIPv6 is the number of available IPv6 addresses.
    #[serde(rename = "availableIPv6", default, deserialize_with = "lenient::value")]
    pub available_ipv6: i64,
    /// Conditions (ferrolb addition). `Valid`: `True`/`Accepted` when the spec is in
    /// force; `False`/`Frozen` when the spec is invalid and `lastValidSpec` stays in force;
    /// `False`/`InvalidConfiguration` when it is invalid and nothing is in force. The
    /// message names the field; `observedGeneration` is the generation judged.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "lenient::list"
    )]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The spec in force (ferrolb addition), written by the controller: the current spec
    /// while it is valid, else the last valid one, which keeps serving (its Services keep
    /// their IPs; no new IP is handed out from it) until the spec is fixed. The controller
    /// and every speaker read it, so it survives restarts.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::value"
    )]
    pub last_valid_spec: Option<IPAddressPoolSpec>,
}

// ---------------------------------------------------------------------------
// L2Advertisement
// ---------------------------------------------------------------------------

/// `spec` of an `L2Advertisement`: which pools are announced in layer 2, from which
/// nodes and interfaces. The whole `spec` may be omitted (all pools, all nodes, all
/// interfaces).
// `printcolumn(...)` repeats keys by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, JsonSchema, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "L2Advertisement",
    plural = "l2advertisements",
    namespaced,
    status = "L2AdvertisementStatus",
    doc = "L2Advertisement allows to advertise the LoadBalancer IPs provided by the selected pools via L2.",
    printcolumn(
        name = "IPAddressPools",
        type_ = "string",
        json_path = ".spec.ipAddressPools"
    ),
    printcolumn(
        name = "IPAddressPool Selectors",
        type_ = "string",
        json_path = ".spec.ipAddressPoolSelectors"
    ),
    printcolumn(name = "Interfaces", type_ = "string", json_path = ".spec.interfaces"),
    printcolumn(
        name = "Node Selectors",
        type_ = "string",
        json_path = ".spec.nodeSelectors",
        priority = 10
    )
)]
#[derive(Serialize, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase")]
#[schemars(rename = "L2AdvertisementSpec")]
pub struct L2AdvertisementSpec {
    /// The list of IPAddressPools to advertise via this advertisement, selected by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pools: Vec<String>,

    /// A selector for the IPAddressPools which would get advertised via this
    /// advertisement. If no IPAddressPool is selected by this or by the list, the
    /// advertisement is applied to all the IPAddressPools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,

    /// NodeSelectors allows to limit the nodes to announce as next hops for the
    /// LoadBalancer IP. When empty, all the nodes having are announced as next hops.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,

    /// A list of interfaces to announce from. The LB IP will be announced only from
    /// these interfaces. If the field is not set, we advertise from all the interfaces
    /// on the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,

    /// ServiceSelectors allows to limit the services this advertisement applies to.
    /// When empty, the advertisement applies to all services.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,

    /// PreferredNodeSelectors gives a soft preference among the nodes allowed by
    /// nodeSelectors: the weights of every matching term are summed per node and the
    /// node with the highest score announces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred_node_selectors: Vec<PreferredNodeSelector>,
}

/// One `spec.preferredNodeSelectors` term of an `L2Advertisement`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PreferredNodeSelector {
    /// Weight associated with matching the preference, in the range 1-100.
    #[schemars(range(min = 1, max = 100))]
    pub weight: i32,
    /// A label selector for nodes.
    pub preference: LabelSelector,
}

/// `status` of an `L2Advertisement` (empty, as in MetalLB).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct L2AdvertisementStatus {}

// ---------------------------------------------------------------------------
// ServiceL2Status
// ---------------------------------------------------------------------------

/// `spec` of a `ServiceL2Status` (empty; the object is all status). May be omitted.
// `printcolumn(...)` repeats keys by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, JsonSchema, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "ServiceL2Status",
    plural = "servicel2statuses",
    namespaced,
    status = "MetalLBServiceL2Status",
    doc = "ServiceL2Status reveals the actual traffic status of loadbalancer services in layer2 mode.",
    printcolumn(name = "Allocated Node", type_ = "string", json_path = ".status.node"),
    printcolumn(
        name = "Service Name",
        type_ = "string",
        json_path = ".status.serviceName"
    ),
    printcolumn(
        name = "Service Namespace",
        type_ = "string",
        json_path = ".status.serviceNamespace"
    )
)]
#[derive(Serialize, Deserialize)]
#[serde(remote = "Self")]
#[schemars(rename = "ServiceL2StatusSpec")]
pub struct ServiceL2StatusSpec {}

/// `status` of a `ServiceL2Status`, written by the announcing speaker.
// Parsed leniently, like `IPAddressPoolStatus` (MetalLB's speaker writes it too).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(remote = "Self", rename_all = "camelCase")]
#[schemars(rename = "MetalLBServiceL2Status")]
pub struct MetalLBServiceL2Status {
    /// Node indicates the node that receives the directed traffic.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "lenient::value"
    )]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "Value is immutable"}]))]
    pub node: String,
    /// ServiceName indicates the service this status represents.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "lenient::value"
    )]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "Value is immutable"}]))]
    pub service_name: String,
    /// ServiceNamespace indicates the namespace of the service.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "lenient::value"
    )]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "Value is immutable"}]))]
    pub service_namespace: String,
    /// Interfaces indicates the interfaces that receive the directed traffic. Empty
    /// means all interfaces.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "lenient::list"
    )]
    pub interfaces: Vec<InterfaceInfo>,
    /// The announced IPs (ferrolb addition; MetalLB does not record them).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "lenient::list"
    )]
    pub ips: Vec<String>,
}

/// One entry of `ServiceL2Status.status.interfaces`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// Interface name.
    pub name: String,
}

// ---------------------------------------------------------------------------
// Lenient status parsing
// ---------------------------------------------------------------------------

/// Deserializers for status fields the components only read. Whoever wrote a status
/// (another controller, another version, a human with `kubectl edit --subresource
/// status`), a field of an unexpected shape reads as its default and a list keeps the
/// entries that parse: the object is never rejected, so a watch never breaks on it.
pub mod lenient {
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    /// The field as `T`, or `T::default()` when it does not parse as one.
    pub fn value<'de, D, T>(de: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: DeserializeOwned + Default,
    {
        let v = Value::deserialize(de)?;
        Ok(serde_json::from_value(v).unwrap_or_default())
    }

    /// The entries of a list that parse as `T` (nothing when the field is not a list).
    pub fn list<'de, D, T>(de: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: DeserializeOwned,
    {
        match Value::deserialize(de)? {
            Value::Array(items) => Ok(items
                .into_iter()
                .filter_map(|i| serde_json::from_value(i).ok())
                .collect()),
            _ => Ok(Vec::new()),
        }
    }

    /// A whole status: an object is read field by field (leniently), anything else
    /// (a string, a list) reads as the default status.
    pub fn object<'de, D, T>(
        de: D,
        fields: impl FnOnce(Value) -> Result<T, serde_json::Error>,
    ) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Default,
    {
        match Value::deserialize(de)? {
            v @ Value::Object(_) => Ok(fields(v).unwrap_or_default()),
            _ => Ok(T::default()),
        }
    }
}

macro_rules! lenient_status {
    ($ty:ident) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                $ty::serialize(self, ser)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
                lenient::object(de, $ty::deserialize)
            }
        }
    };
}

lenient_status!(IPAddressPoolStatus);
lenient_status!(MetalLBServiceL2Status);

// ---------------------------------------------------------------------------
// Optional `spec`: the generated root types have a mandatory `spec` field, but
// MetalLB lets `spec` be omitted for L2Advertisement and ServiceL2Status. These
// impls accept a missing or `null` spec as the default spec.
// ---------------------------------------------------------------------------

macro_rules! optional_spec {
    ($ty:ident) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                $ty::serialize(self, ser)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str(concat!("a ", stringify!($ty), " object or nothing"))
                    }
                    fn visit_none<E: serde::de::Error>(self) -> Result<$ty, E> {
                        Ok($ty::default())
                    }
                    fn visit_unit<E: serde::de::Error>(self) -> Result<$ty, E> {
                        Ok($ty::default())
                    }
                    fn visit_some<D2: Deserializer<'de>>(self, de: D2) -> Result<$ty, D2::Error> {
                        $ty::deserialize(de)
                    }
                }
                de.deserialize_option(V)
            }
        }
    };
}

optional_spec!(L2AdvertisementSpec);
optional_spec!(ServiceL2StatusSpec);

// ---------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------

/// Drops `spec` from the root `required` list (for kinds whose spec may be omitted).
fn spec_optional(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for v in &mut crd.spec.versions {
        if let Some(schema) = v
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            if let Some(req) = schema.required.as_mut() {
                req.retain(|r| r != "spec");
                if req.is_empty() {
                    schema.required = None;
                }
            }
        }
    }
    crd
}

/// Every CRD ferrolb serves, in a stable order (IPAddressPool, L2Advertisement,
/// ServiceL2Status).
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![
        IPAddressPool::crd(),
        spec_optional(L2Advertisement::crd()),
        spec_optional(ServiceL2Status::crd()),
    ]
}

/// File name of a CRD under `crds/`, as MetalLB names them: `metallb.io_<plural>.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// One CRD as a YAML document (without the leading `---`).
pub fn crd_yaml(crd: &CustomResourceDefinition) -> anyhow::Result<String> {
    Ok(serde_norway::to_string(crd)?)
}

/// Every CRD as `(file name, YAML)`, in the order of [`all_crds`].
pub fn crd_files() -> anyhow::Result<Vec<(String, String)>> {
    all_crds()
        .iter()
        .map(|c| Ok((crd_file_name(c), crd_yaml(c)?)))
        .collect()
}

/// `crds/kustomization.yaml`: lists every file of [`crd_files`], so `deploy/` can use
/// `../crds` as a kustomize resource.
pub fn kustomization_yaml() -> String {
    let mut out = String::from(
        "# GENERATED from crates/ferrolb-core/src/crd.rs; regenerate with `UPDATE_CRDS=1 cargo test --test it crds`.\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\n\
         kind: Kustomization\n\
         resources:\n",
    );
    for c in all_crds() {
        out.push_str(&format!("  - {}\n", crd_file_name(&c)));
    }
    out
}

/// Every CRD as one multi-document YAML string (`ferrolb crds | kubectl apply -f -`).
pub fn all_crds_yaml() -> anyhow::Result<String> {
    let mut out = String::new();
    for (_, yaml) in crd_files()? {
        out.push_str("---\n");
        out.push_str(&yaml);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn schema_of(crd: &CustomResourceDefinition) -> Value {
        serde_json::to_value(
            crd.spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn crds_are_namespaced_v1beta1_with_status() {
        let crds = all_crds();
        let names: Vec<_> = crds
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "ipaddresspools.metallb.io",
                "l2advertisements.metallb.io",
                "servicel2statuses.metallb.io"
            ]
        );
        for c in &crds {
            assert_eq!(c.spec.scope, "Namespaced");
            assert_eq!(c.spec.versions.len(), 1);
            let v = &c.spec.versions[0];
            assert_eq!(v.name, "v1beta1");
            assert!(v.served && v.storage);
            assert!(v.subresources.as_ref().unwrap().status.is_some());
        }
    }

    #[test]
    fn printer_columns_match_metallb() {
        let cols = |i: usize| -> Vec<(String, String, String, Option<i32>)> {
            all_crds()[i].spec.versions[0]
                .additional_printer_columns
                .clone()
                .unwrap()
                .into_iter()
                .map(|c| (c.name, c.type_, c.json_path, c.priority))
                .collect()
        };
        let s = |a: &str, b: &str, c: &str, p| (a.to_string(), b.to_string(), c.to_string(), p);
        assert_eq!(
            cols(0),
            [
                s("Auto Assign", "boolean", ".spec.autoAssign", None),
                s("Avoid Buggy IPs", "boolean", ".spec.avoidBuggyIPs", None),
                s("Addresses", "string", ".spec.addresses", None),
            ]
        );
        assert_eq!(
            cols(1),
            [
                s("IPAddressPools", "string", ".spec.ipAddressPools", None),
                s(
                    "IPAddressPool Selectors",
                    "string",
                    ".spec.ipAddressPoolSelectors",
                    None
                ),
                s("Interfaces", "string", ".spec.interfaces", None),
                s("Node Selectors", "string", ".spec.nodeSelectors", Some(10)),
            ]
        );
        assert_eq!(
            cols(2),
            [
                s("Allocated Node", "string", ".status.node", None),
                s("Service Name", "string", ".status.serviceName", None),
                s(
                    "Service Namespace",
                    "string",
                    ".status.serviceNamespace",
                    None
                ),
            ]
        );
    }

    #[test]
    fn pool_schema_has_metallb_fields_and_rules() {
        let s = schema_of(&all_crds()[0]);
        assert_eq!(s["required"], json!(["spec"]));
        let spec = &s["properties"]["spec"];
        assert_eq!(spec["required"], json!(["addresses"]));
        let addresses = &spec["properties"]["addresses"];
        assert_eq!(addresses["minItems"], json!(1));
        assert_eq!(addresses["maxItems"], json!(MAX_POOL_ADDRESSES));
        assert_eq!(addresses["items"]["maxLength"], json!(MAX_ADDRESS_LENGTH));
        let rules: Vec<(&str, &str)> = addresses["items"]["x-kubernetes-validations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                assert!(r["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("must be")));
                (
                    r["rule"].as_str().unwrap(),
                    r["messageExpression"].as_str().unwrap(),
                )
            })
            .collect();
        let want = address_rules();
        assert_eq!(
            rules,
            want.iter()
                .map(|(r, m)| (r.as_str(), m.as_str()))
                .collect::<Vec<_>>()
        );
        // The spec in force, published in the status, carries the same schema.
        assert_eq!(
            &s["properties"]["status"]["properties"]["lastValidSpec"]["properties"]["addresses"],
            addresses
        );
        assert_eq!(spec["properties"]["autoAssign"]["default"], json!(true));
        assert_eq!(
            spec["properties"]["avoidBuggyIPs"]["type"],
            json!("boolean")
        );
        let alloc = &spec["properties"]["serviceAllocation"]["properties"];
        for f in [
            "priority",
            "namespaces",
            "namespaceSelectors",
            "serviceSelectors",
        ] {
            assert!(alloc.get(f).is_some(), "serviceAllocation.{f} missing");
        }
        let status = &s["properties"]["status"];
        for f in [
            "assignedIPv4",
            "assignedIPv6",
            "availableIPv4",
            "availableIPv6",
        ] {
            assert_eq!(status["properties"][f]["type"], json!("integer"), "{f}");
        }
        assert!(status["properties"].get("conditions").is_some());
    }

    #[test]
    fn l2advertisement_schema_spec_optional_weight_bounded() {
        let s = schema_of(&all_crds()[1]);
        assert!(s.get("required").is_none(), "spec must be optional: {s}");
        let p = &s["properties"]["spec"]["properties"];
        for f in [
            "ipAddressPools",
            "ipAddressPoolSelectors",
            "nodeSelectors",
            "interfaces",
            "serviceSelectors",
            "preferredNodeSelectors",
        ] {
            assert!(p.get(f).is_some(), "spec.{f} missing");
        }
        let w = &p["preferredNodeSelectors"]["items"]["properties"]["weight"];
        assert_eq!(w["minimum"].as_f64(), Some(1.0));
        assert_eq!(w["maximum"].as_f64(), Some(100.0));
    }

    #[test]
    fn servicel2status_identity_fields_are_immutable() {
        let s = schema_of(&all_crds()[2]);
        let p = &s["properties"]["status"]["properties"];
        for f in ["node", "serviceName", "serviceNamespace"] {
            assert_eq!(
                p[f]["x-kubernetes-validations"],
                json!([{"rule": "self == oldSelf", "message": "Value is immutable"}]),
                "{f}"
            );
        }
        assert!(p["interfaces"]["items"]["properties"].get("name").is_some());
        assert_eq!(p["ips"]["type"], json!("array"));
    }

    #[test]
    fn spec_may_be_omitted_or_null() {
        let ad: L2Advertisement = serde_norway::from_str(
            "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: empty}\n",
        )
        .unwrap();
        assert_eq!(ad.spec, L2AdvertisementSpec::default());
        let ad: L2Advertisement = serde_json::from_value(json!({
            "apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
            "metadata": {"name": "n"}, "spec": null
        }))
        .unwrap();
        assert_eq!(ad.spec, L2AdvertisementSpec::default());
        let st: ServiceL2Status = serde_json::from_value(json!({
            "apiVersion": "metallb.io/v1beta1", "kind": "ServiceL2Status",
            "metadata": {"name": "l2-x"}, "status": {"node": "n1", "serviceName": "s",
            "serviceNamespace": "ns", "interfaces": [{"name": "eth0"}], "ips": ["10.0.0.1"]}
        }))
        .unwrap();
        let status = st.status.unwrap();
        assert_eq!(status.node, "n1");
        assert_eq!(
            status.interfaces,
            [InterfaceInfo {
                name: "eth0".into()
            }]
        );
        assert_eq!(status.ips, ["10.0.0.1"]);
    }

    #[test]
    fn spec_fields_roundtrip_with_metallb_names() {
        let v = json!({
            "apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
            "metadata": {"name": "a"},
            "spec": {
                "ipAddressPools": ["p"],
                "ipAddressPoolSelectors": [{"matchLabels": {"x": "y"}}],
                "nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": "n"}}],
                "interfaces": ["eth0"],
                "serviceSelectors": [{"matchLabels": {"tier": "frontend"}}],
                "preferredNodeSelectors": [{"weight": 100, "preference": {"matchLabels": {"r": "edge"}}}]
            }
        });
        let ad: L2Advertisement = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(ad.spec.preferred_node_selectors[0].weight, 100);
        assert_eq!(serde_json::to_value(&ad).unwrap(), v);

        let pool: IPAddressPool = serde_json::from_value(json!({
            "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "p"},
            "spec": {"addresses": ["10.0.0.0/24"], "avoidBuggyIPs": true,
                     "serviceAllocation": {"priority": 5, "namespaces": ["a"]}}
        }))
        .unwrap();
        assert!(pool.spec.auto_assign, "autoAssign defaults to true");
        assert!(pool.spec.avoid_buggy_ips);
        assert_eq!(pool.spec.service_allocation.unwrap().priority, Some(5));
    }

    #[test]
    fn statuses_are_read_leniently() {
        // Odd statuses (another writer, another version, a human): the object still
        // parses, the odd fields read as defaults, good list entries are kept.
        let pool: IPAddressPool = serde_json::from_value(json!({
            "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "p"}, "spec": {"addresses": ["10.0.0.0/24"]},
            "status": {"assignedIPv4": "3", "availableIPv4": 5,
                "conditions": [{"type": "Valid", "status": "True"},
                               {"type": "Other", "status": "True", "reason": "R", "message": "",
                                "lastTransitionTime": "2024-01-01T00:00:00Z"}],
                "lastValidSpec": {"addresses": "not a list"}}
        }))
        .unwrap();
        let st = pool.status.unwrap();
        assert_eq!((st.assigned_ipv4, st.available_ipv4), (0, 5));
        assert_eq!(
            st.conditions.len(),
            1,
            "the one without lastTransitionTime is skipped"
        );
        assert_eq!(st.conditions[0].type_, "Other");
        assert_eq!(st.last_valid_spec, None);
        for odd in [json!("x"), json!([]), json!(3), json!({})] {
            let p: IPAddressPool = serde_json::from_value(json!({
                "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                "metadata": {"name": "p"}, "spec": {"addresses": ["10.0.0.0/24"]},
                "status": odd
            }))
            .unwrap();
            assert_eq!(p.status.unwrap(), IPAddressPoolStatus::default());
        }
        // A status written by MetalLB (counters only) round-trips without additions.
        let metallb =
            json!({"assignedIPv4": 1, "assignedIPv6": 0, "availableIPv4": 20, "availableIPv6": 0});
        let st: IPAddressPoolStatus = serde_json::from_value(metallb.clone()).unwrap();
        assert_eq!(serde_json::to_value(&st).unwrap(), metallb);

        let l2: ServiceL2Status = serde_json::from_value(json!({
            "apiVersion": "metallb.io/v1beta1", "kind": "ServiceL2Status",
            "metadata": {"name": "l2-x"},
            "status": {"node": 7, "serviceName": "s", "interfaces": [{}, {"name": "eth0"}, "eth1"],
                       "ips": ["10.0.0.1", 5]}
        }))
        .unwrap();
        let st = l2.status.unwrap();
        assert_eq!(st.node, "");
        assert_eq!(st.service_name, "s");
        assert_eq!(
            st.interfaces,
            [InterfaceInfo {
                name: "eth0".into()
            }]
        );
        assert_eq!(st.ips, ["10.0.0.1"]);
        let l2: ServiceL2Status = serde_json::from_value(json!({
            "apiVersion": "metallb.io/v1beta1", "kind": "ServiceL2Status",
            "metadata": {"name": "l2-x"}, "status": "garbage"
        }))
        .unwrap();
        assert_eq!(l2.status.unwrap(), MetalLBServiceL2Status::default());
    }

    #[test]
    fn all_crds_yaml_is_multi_doc_in_order() {
        let y = all_crds_yaml().unwrap();
        assert_eq!(y.matches("---\n").count(), 3);
        let a = y.find("name: ipaddresspools.metallb.io").unwrap();
        let b = y.find("name: l2advertisements.metallb.io").unwrap();
        let c = y.find("name: servicel2statuses.metallb.io").unwrap();
        assert!(a < b && b < c);
    }
}
