//! CRI bindings (being written).
