//! Metric names of this crate: `osprey_notify_*`.

/// Alerts, by `result` (sent, failed).
pub const ALERTS_TOTAL: &str = "osprey_notify_alerts_total";
