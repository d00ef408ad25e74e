//! cluster-client
