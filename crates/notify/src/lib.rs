//! The notifier: reads detection results and, for each rule that matches (camera, label, count,
//! score, active hours, cool-down), POSTs a JSON alert with a signed link to the chunk.

pub mod config;
mod follow;
pub mod metrics;
mod rules;

pub use config::{Config, RuleConfig, TimeOfDay, Trigger};
pub use rules::{Alert, Rules};

use osprey_bus::Bus;
use osprey_core::{Backoff, Clock, DetectionResult, Error, Result, TOPIC_DETECTIONS};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A webhook that refuses or is down gets the alert three times in all.
const WEBHOOK_RETRY: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2)).attempts(3);

/// Runs until `shutdown` is cancelled.
pub async fn run(config: &Config, bus: Arc<dyn Bus>, clock: Arc<dyn Clock>, shutdown: CancellationToken) -> Result<()> {
    let mut rules = Rules::new(config, clock.clone())?;
    let group = config.group.clone().unwrap_or_else(|| "osprey-notifier".into());
    let mut consumer = bus.subscribe(TOPIC_DETECTIONS, &group).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| Error::internal("cannot build http client").with_source(e))?;
    tracing::info!(rules = config.rules.len(), "notifier reading {TOPIC_DETECTIONS}");
    loop {
        let message = tokio::select! {
            m = consumer.recv() => m?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        match serde_json::from_slice::<DetectionResult>(&message.payload) {
            Ok(result) => {
                for alert in rules.evaluate(&result) {
                    deliver(&http, clock.as_ref(), &alert).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "not a detection result; skipped"),
        }
        consumer.commit(&message).await?;
    }
}

/// POSTs an alert, retrying a few times; a webhook that stays down loses that alert (logged and
/// counted), it does not hold up the others.
async fn deliver(http: &reqwest::Client, clock: &dyn Clock, alert: &Alert) {
    let body = serde_json::to_vec(&alert.body).expect("alerts serialise");
    let what = format!("alert to {}", alert.webhook);
    let post = || async {
        let mut request = http.post(&alert.webhook).header("Content-Type", "application/json").body(body.clone());
        if let Some(signature) = &alert.signature {
            request = request.header("X-Osprey-Signature", signature);
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            // Any refusal may be passing (a webhook being deployed answers 404 for a while).
            Ok(r) => Err(Error::unavailable(format!("webhook answered {}", r.status()))),
            Err(e) => Err(Error::unavailable("webhook unreachable").with_source(e)),
        }
    };
    match osprey_core::retry::retry(&WEBHOOK_RETRY, clock, &what, post).await {
        (Ok(()), _) => {
            ::metrics::counter!(crate::metrics::ALERTS_TOTAL, "result" => "sent").increment(1);
            tracing::info!(rule = %alert.body["rule"], camera = %alert.body["camera"], "alert sent");
        }
        (Err(e), attempts) => {
            ::metrics::counter!(crate::metrics::ALERTS_TOTAL, "result" => "failed").increment(1);
            tracing::warn!(error = %e, attempts, webhook = %alert.webhook, "alert lost: the webhook did not take it");
        }
    }
}
