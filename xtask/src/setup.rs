//! Machine setup (stub: being written).
