//! blob-node
