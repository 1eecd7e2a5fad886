//! The notifier's typed config, the `[notify]` section of the file.

use osprey_core::config::Secret;
use osprey_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The notifier: rules over detection results that call webhooks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub group: Option<String>,
    pub rules: Vec<RuleConfig>,
    /// A track that starts at most this long after one of the camera's previous chunk ended
    /// (same label, boxes that continue) is the same object, not a new one.
    #[serde(rename = "join_gap_ms", with = "osprey_core::config::millis")]
    pub join_gap: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config { group: None, rules: Vec::new(), join_gap: Duration::from_millis(2000) }
    }
}

/// What makes a rule fire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A frame holds at least `min_count` objects of the label.
    #[default]
    Frame,
    /// A new object of the label appears (once per object, followed across chunks).
    NewTrack,
    /// An object of the label enters `zone` (once per object).
    Zone,
    /// An object of the label stays in `zone` for `min_dwell_secs` (once per object).
    Dwell,
    /// At least `min_count` new objects of the label appear within `window_secs`.
    Count,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    /// Cameras (instance name or device) the rule watches; empty watches all.
    #[serde(default)]
    pub cameras: Vec<String>,
    /// COCO label, e.g. "person".
    pub label: String,
    /// What makes it fire: "frame" (default), "new_track", "zone", "dwell" or "count".
    #[serde(default)]
    pub trigger: Trigger,
    /// Objects in one frame ("frame"), or new objects within `window_secs` ("count").
    #[serde(default = "one")]
    pub min_count: u32,
    /// The zone of "zone" and "dwell" rules (`[[detect.zones]]`).
    #[serde(default)]
    pub zone: Option<String>,
    /// Time in the zone that fires a "dwell" rule.
    #[serde(rename = "min_dwell_secs", with = "osprey_core::config::secs", default)]
    pub min_dwell: Duration,
    /// The window of a "count" rule.
    #[serde(rename = "window_secs", with = "osprey_core::config::secs", default = "five_minutes")]
    pub window: Duration,
    #[serde(default = "half")]
    pub min_score: f32,
    /// Active only between these UTC times of day ("HH:MM"); both or neither. May wrap midnight.
    #[serde(default)]
    pub active_from: Option<TimeOfDay>,
    #[serde(default)]
    pub active_to: Option<TimeOfDay>,
    /// After firing for a camera, stay quiet for this long.
    #[serde(rename = "cooldown_secs", with = "osprey_core::config::secs", default = "five_minutes")]
    pub cooldown: Duration,
    /// Where the alert is POSTed.
    pub webhook: String,
    /// Signs the alert body: header `X-Osprey-Signature: sha256=<hex HMAC>`.
    #[serde(default)]
    pub secret: Option<Secret>,
}

fn one() -> u32 {
    1
}
fn half() -> f32 {
    0.5
}
fn five_minutes() -> Duration {
    Duration::from_secs(300)
}

/// Minutes after midnight of an "HH:MM" time.
fn parse_time_of_day(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

impl Config {
    pub fn validate(&self) -> Result<()> {
        for (i, rule) in self.rules.iter().enumerate() {
            let bad = |what: &str| Error::invalid(format!("invalid config: notify.rules[{i}] ({}): {what}", rule.name));
            if !(rule.webhook.starts_with("http://") || rule.webhook.starts_with("https://")) {
                return Err(bad("webhook must be an http(s) URL"));
            }
            if rule.label.is_empty() || rule.min_count == 0 || !(0.0..=1.0).contains(&rule.min_score) {
                return Err(bad("needs a label, min_count above 0 and min_score within 0..1"));
            }
            let needs_zone = matches!(rule.trigger, Trigger::Zone | Trigger::Dwell);
            if needs_zone != rule.zone.is_some() {
                return Err(bad("a zone goes with the zone and dwell triggers, and only with them"));
            }
            if rule.trigger == Trigger::Dwell && rule.min_dwell.is_zero() {
                return Err(bad("a dwell rule needs min_dwell_secs above 0"));
            }
            if rule.trigger == Trigger::Count && rule.window.is_zero() {
                return Err(bad("a count rule needs window_secs above 0"));
            }
            if rule.active_from.is_some() != rule.active_to.is_some() {
                return Err(bad("active_from and active_to go together: both HH:MM, or both absent"));
            }
        }
        Ok(())
    }
}

/// A UTC time of day, "HH:MM", held as minutes after midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeOfDay(u32);

impl TimeOfDay {
    pub fn minutes(self) -> u32 {
        self.0
    }
}

impl std::str::FromStr for TimeOfDay {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        parse_time_of_day(s)
            .map(TimeOfDay)
            .ok_or_else(|| Error::invalid(format!("{s:?} is not a time of day: use HH:MM")))
    }
}

impl std::fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|e: Error| serde::de::Error::custom(e.to_string()))
    }
}
