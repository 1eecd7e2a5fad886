//! Kerberos on the wire, in one place: the `X-Kerberos-Storage-*` headers, tus `Upload-Metadata`,
//! the agent's file-name format, the vault's upload answer and heartbeat, parsed once into typed
//! values; and the one upload client (plain POST and tus) that Osprey's agent and the vault's
//! forwarder both use. What each value means and its unit is tabled in `docs/kerberos.md`.

pub mod client;
pub mod name;
pub mod wire;

pub use client::{Client, Upload, VaultTarget, UPLOAD_RETRY};
pub use name::FileName;
pub use wire::{Heartbeat, TusMetadata, UploadAnswer, UploadHeaders};
