//! Shared helpers for kernlet integration tests.
