//! Shared by the fuzz tests.
pub mod mutate;
