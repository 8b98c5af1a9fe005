//! `metallb.io/v1beta1` CustomResourceDefinitions. (placeholder until the foundation issue lands)

/// Every CRD as one multi-document YAML string.
pub fn all_crds_yaml() -> anyhow::Result<String> {
    anyhow::bail!("`ferrolb crds` is not there yet")
}
