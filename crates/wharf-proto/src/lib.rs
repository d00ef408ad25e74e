//! wharf-proto
