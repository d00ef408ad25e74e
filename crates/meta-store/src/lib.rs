//! meta-store
