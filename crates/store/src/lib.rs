//! Storage providers. Every backend is an `object_store` store behind one [`Provider`] type, so
//! the vault never knows which one it writes to, and one conformance suite checks them all.
//!
//! Writes are all-or-nothing: bytes stream to the store while their size and SHA-256 are
//! counted, and the object appears only when complete. `put` writes straight to the final key;
//! `upload` writes to a private staging object that is later committed (never overwriting) or
//! discarded. A failed or oversized write leaves nothing behind.

mod cloud;
pub mod config;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod provider;

pub use cloud::build as cloud_provider;
pub use config::{ProviderConfig, ProviderKind};
pub use provider::{Provider, Providers, Staged, StagedLeftover, Stored};
