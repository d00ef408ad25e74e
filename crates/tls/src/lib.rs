//! TLS for Wharf (being written).
