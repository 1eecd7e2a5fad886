//! What every Osprey role runs on: a supervisor that owns the role's background tasks and stops
//! them within a deadline, and the process's telemetry (the Prometheus recorder, `/metrics`,
//! `/healthz`). The retry policy and the clock live in `osprey_core`, beside the error kinds that
//! decide what is retried.

pub mod supervisor;
pub mod telemetry;

pub use supervisor::{Stopped, Supervisor};
