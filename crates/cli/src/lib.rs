//! The `osprey` command line: what wires every role together. The binary is `src/main.rs`; this
//! library holds what its tests share with it, the whole configuration file.

pub mod config;

pub use config::Config;
