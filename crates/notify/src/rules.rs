use crate::config::{Config, RuleConfig, Trigger};
use crate::follow::{Followed, Objects};
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
    objects: Objects,
}

/// Why a rule fires: what goes in the alert besides the result.
#[derive(Debug, Clone, Default)]
struct Hit {
    count: u32,
    best: f32,
    object: Option<u64>,
    track: Option<u32>,
    dwell_ms: Option<i64>,
}

impl Rules {
    pub fn new(config: &Config, clock: Arc<dyn Clock>) -> Result<Self> {
        let objects = Objects::new(config.join_gap);
        Ok(Rules { rules: config.rules.clone(), clock, last_fired: HashMap::new(), objects })
    }

    /// The alerts one detection result raises, recording them for the cool-down.
    pub fn evaluate(&mut self, result: &DetectionResult) -> Vec<Alert> {
        let now = self.clock.unix_secs();
        let meta = &result.event.payload.metadata;
        let camera = if meta.instance_name.is_empty() { &meta.product_id } else { &meta.instance_name };
        let followed = self.objects.follow(camera, result);
        let mut alerts = Vec::new();
        for i in 0..self.rules.len() {
            let rule = &self.rules[i];
            let watched = rule.cameras.is_empty() || rule.cameras.iter().any(|c| c == camera || *c == meta.product_id);
            if !watched || !active(rule, now) {
                continue;
            }
            for hit in self.hits(i, camera, result, &followed) {
                let key = (i, camera.clone());
                let rule = &self.rules[i];
                if self.last_fired.get(&key).is_some_and(|t| now - t < rule.cooldown.as_secs() as i64) {
                    continue;
                }
                self.last_fired.insert(key, now);
                if let Some(o) = hit.object.and_then(|id| self.objects.get_mut(id)) {
                    o.fired.push(i);
                }
                alerts.push(alert(rule, result, camera, &hit, now));
            }
        }
        alerts
    }

    /// What in this result fires rule `i`.
    fn hits(&self, i: usize, camera: &str, result: &DetectionResult, followed: &[Followed<'_>]) -> Vec<Hit> {
        let rule = &self.rules[i];
        let mine = followed.iter().filter(|f| f.track.label == rule.label && f.track.best_score >= rule.min_score);
        let hit = |f: &Followed<'_>, dwell_ms: Option<i64>| Hit {
            count: 1,
            best: f.track.best_score,
            object: Some(f.object),
            track: Some(f.track.id),
            dwell_ms,
        };
        let not_fired = |f: &&Followed<'_>| self.objects.get(f.object).is_some_and(|o| !o.fired.contains(&i));
        let zone = rule.zone.as_deref().unwrap_or("");
        match rule.trigger {
            Trigger::Frame => {
                let (count, best) = strongest_frame(result, &rule.label, rule.min_score);
                (count >= rule.min_count).then(|| Hit { count, best, ..Hit::default() }).into_iter().collect()
            }
            Trigger::NewTrack => mine.filter(|f| f.is_new).map(|f| hit(f, None)).collect(),
            Trigger::Zone => mine
                .filter(|f| f.track.zones.iter().any(|z| z.zone == zone))
                .filter(not_fired)
                .map(|f| hit(f, None))
                .collect(),
            Trigger::Dwell => mine
                .filter(not_fired)
                .filter_map(|f| {
                    let dwell = *self.objects.get(f.object)?.dwell.get(zone)?;
                    (dwell >= rule.min_dwell.as_millis() as i64).then(|| hit(f, Some(dwell)))
                })
                .collect(),
            Trigger::Count => {
                let Some(newest) = mine.clone().rfind(|f| f.is_new) else { return Vec::new() };
                let since = crate::follow::start_ms(result) + newest.track.first_ms - rule.window.as_millis() as i64;
                let count = self.objects.new_since(camera, &rule.label, since) as u32;
                (count >= rule.min_count)
                    .then(|| Hit { count, best: newest.track.best_score, ..Hit::default() })
                    .into_iter()
                    .collect()
            }
        }
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

fn alert(rule: &RuleConfig, result: &DetectionResult, camera: &str, hit: &Hit, now: i64) -> Alert {
    let e = &result.event;
    let (count, best) = (hit.count, hit.best);
    let mut body = json!({
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
        "trigger": rule.trigger,
    });
    let extra = [
        ("object", hit.object.map(Value::from)),
        ("track_id", hit.track.map(Value::from)),
        ("zone", rule.zone.clone().map(Value::from)),
        ("dwell_ms", hit.dwell_ms.map(Value::from)),
    ];
    for (key, value) in extra {
        if let Some(v) = value {
            body[key] = v;
        }
    }
    let signature = rule.secret.as_ref().map(|secret| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).expect("hmac takes any key length");
        mac.update(&serde_json::to_vec(&body).expect("alerts serialise"));
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    });
    Alert { webhook: rule.webhook.clone(), body, signature }
}
