//! meta-node
