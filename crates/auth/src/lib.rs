//! Access control (being written).
