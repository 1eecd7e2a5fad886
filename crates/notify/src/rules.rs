use crate::config::RuleConfig;
use hmac::{Hmac, Mac};
use osprey_core::{Clock, DetectionResult, Result};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Arc;

/// An alert ready to send: where, what, and its signature header value if the rule has a secret.
#[derive(Debug, Clone)]
pub struct Alert {
    pub webhook: String,
    pub body: Value,
    pub signature: Option<String>,
}

pub struct Rules {
    rules: Vec<RuleConfig>,
    clock: Arc<dyn Clock>,
    /// When each (rule, camera) last fired, in unix seconds.
    last_fired: HashMap<(usize, String), i64>,
}

impl Rules {
    pub fn new(rules: &[RuleConfig], clock: Arc<dyn Clock>) -> Result<Self> {
        Ok(Rules { rules: rules.to_vec(), clock, last_fired: HashMap::new() })
    }

    /// The alerts one detection result raises, recording them for the cool-down.
    pub fn evaluate(&mut self, result: &DetectionResult) -> Vec<Alert> {
        let now = self.clock.unix_secs();
        let meta = &result.event.payload.metadata;
        let camera = if meta.instance_name.is_empty() { &meta.product_id } else { &meta.instance_name };
        let mut alerts = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let watched = rule.cameras.is_empty() || rule.cameras.iter().any(|c| c == camera || *c == meta.product_id);
            if !watched || !active(rule, now) {
                continue;
            }
            let (count, best) = strongest_frame(result, &rule.label, rule.min_score);
            if count < rule.min_count {
                continue;
            }
            let key = (i, camera.clone());
            if self.last_fired.get(&key).is_some_and(|t| now - t < rule.cooldown.as_secs() as i64) {
                continue;
            }
            self.last_fired.insert(key, now);
            alerts.push(alert(rule, result, camera, count, best, now));
        }
        alerts
    }
}

/// The most objects of `label` scoring at least `min_score` in any one frame, and the best score.
fn strongest_frame(result: &DetectionResult, label: &str, min_score: f32) -> (u32, f32) {
    let mut most = 0u32;
    let mut best = 0f32;
    for frame in &result.data.frames {
        let matching = frame.detections.iter().filter(|d| d.label == label && d.score >= min_score);
        let (n, top) = matching.fold((0u32, 0f32), |(n, top), d| (n + 1, top.max(d.score)));
        most = most.max(n);
        best = best.max(top);
    }
    (most, best)
}

fn active(rule: &RuleConfig, now: i64) -> bool {
    let (Some(from), Some(to)) = (rule.active_from, rule.active_to) else { return true };
    let (from, to) = (from.minutes(), to.minutes());
    let minute = (now.rem_euclid(86_400) / 60) as u32;
    if from <= to {
        (from..to).contains(&minute)
    } else {
        minute >= from || minute < to
    }
}

fn alert(rule: &RuleConfig, result: &DetectionResult, camera: &str, count: u32, best: f32, now: i64) -> Alert {
    let e = &result.event;
    let body = json!({
        "rule": rule.name,
        "camera": camera,
        "device": e.payload.metadata.product_id,
        "label": rule.label,
        "count": count,
        "max_score": best,
        "chunk_id": e.chunk_id,
        "key": e.payload.key,
        "recorded_at": e.payload.metadata.timestamp,
        "alerted_at": now,
        "link": e.payload.signed_url,
    });
    let signature = rule.secret.as_ref().map(|secret| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).expect("hmac takes any key length");
        mac.update(&serde_json::to_vec(&body).expect("alerts serialise"));
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    });
    Alert { webhook: rule.webhook.clone(), body, signature }
}
