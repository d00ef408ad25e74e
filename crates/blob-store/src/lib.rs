//! blob-store
