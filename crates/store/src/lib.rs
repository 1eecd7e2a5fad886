//! Storage providers. Every backend is an `object_store` store behind one [`Provider`] type, so
//! the vault never knows which one it writes to, and one conformance suite checks them all.
//!
//! Uploads are staged: bytes stream to a private staging object while their size and SHA-256
//! are counted, and only a complete upload is moved to its final key. A failed or oversized
//! upload leaves nothing behind.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod provider;

pub use provider::{Provider, Providers, Staged};
