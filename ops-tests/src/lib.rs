//! Shared helpers for the op and model tests.
