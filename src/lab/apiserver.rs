//! Embedded in-memory Kubernetes API server for the lab and end-to-end tests. (placeholder)
