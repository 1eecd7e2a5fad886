//! Re-analysis jobs over HTTP on a vault (SQLite, embedded bus): an account lists and cancels
//! its own jobs only, a cancelled job sends nothing more to the bus, a finished one cannot be
//! cancelled, and every refusal is a JSON error.

use osprey_bus::{Bus, EmbeddedBus};
use osprey_core::SystemClock;
use osprey_testkit::mp4_like_bytes;
use osprey_vault::{AccountConfig, Setup};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CAMS: (&str, &str) = ("k", "secret-1");
const OTHER: (&str, &str) = ("o", "secret-2");
const TOPIC: &str = "osprey.reanalyse.default";

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, keys: (&str, &str), body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).basic_auth(keys.0, Some(keys.1));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let resp = request.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn job(&self, id: &Value) -> Value {
        let (status, job) = self.call(reqwest::Method::GET, &format!("/api/v1/reanalyse/{id}"), CAMS, None).await;
        assert_eq!(status, 200, "{job}");
        job
    }
}

/// Messages on the re-analysis topic within `wait`.
async fn sent(consumer: &mut Box<dyn osprey_bus::Consumer>, wait: Duration) -> usize {
    let mut n = 0;
    while let Ok(message) = tokio::time::timeout(wait, consumer.recv()).await {
        consumer.commit(&message.unwrap()).await.unwrap();
        n += 1;
    }
    n
}

/// A vault with two accounts and twelve recordings of the first, a second apart from
/// 1_700_000_000.
async fn vault_with_recordings(dir: &std::path::Path) -> (osprey_vault::Vault, Api, Arc<dyn Bus>) {
    let mut config = Setup::new(dir);
    config.vault.listen = "127.0.0.1:0".parse().unwrap();
    config.vault.fsync = false;
    config.vault.accounts =
        vec![AccountConfig::new("cams", CAMS.0, CAMS.1), AccountConfig::new("other", OTHER.0, OTHER.1)];
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::in_memory().await.unwrap());
    let providers = config.providers().unwrap();
    let vault = osprey_vault::Vault::start(config, bus.clone(), providers, Arc::new(SystemClock)).await.unwrap();
    let api = Api { base: format!("http://{}", vault.addr), http: reqwest::Client::new() };
    for i in 0..12u8 {
        let resp = api
            .http
            .post(format!("{}/storage", api.base))
            .header("Content-Type", "video/mp4")
            .header("X-Kerberos-Storage-AccessKey", CAMS.0)
            .header("X-Kerberos-Storage-SecretAccessKey", CAMS.1)
            .header("X-Kerberos-Storage-Provider", "local")
            .header(
                "X-Kerberos-Storage-FileName",
                format!("{}_6-967003_gate_0-0-0-0_0_{i}.mp4", 1_700_000_000 + i as u64),
            )
            .header("X-Kerberos-Storage-Directory", "cams")
            .body(mp4_like_bytes(4_000, i))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }
    (vault, api, bus)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_account_lists_and_cancels_its_own_jobs_and_a_cancelled_job_sends_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, api, bus) = vault_with_recordings(dir.path()).await;
    let range = json!({"group": "default", "from": 1_699_999_000, "to": 1_700_000_100, "rate": 1});
    let (status, job) = api.call(reqwest::Method::POST, "/api/v1/reanalyse", CAMS, Some(range.clone())).await;
    assert_eq!((status, job["total"].as_i64()), (202, Some(12)), "{job}");
    let path = format!("/api/v1/reanalyse/{}", job["id"]);
    let mut topic = bus.subscribe(TOPIC, "test").await.unwrap();

    // The other account neither sees nor cancels it.
    let (status, theirs) = api.call(reqwest::Method::GET, "/api/v1/reanalyse", OTHER, None).await;
    assert_eq!((status, theirs["jobs"].as_array().map(Vec::len)), (200, Some(0)), "{theirs}");
    let (status, refused) = api.call(reqwest::Method::DELETE, &path, OTHER, None).await;
    assert_eq!(status, 404, "{refused}");
    assert!(refused["error"].is_string(), "a JSON error: {refused}");
    assert_eq!(api.job(&job["id"]).await["state"], "running", "still running after the other account's try");
    let (status, _) = api.call(reqwest::Method::DELETE, &path, ("k", "wrong-secret"), None).await;
    assert_eq!(status, 403, "a wrong secret");
    let (status, bad) = api.call(reqwest::Method::DELETE, "/api/v1/reanalyse/not-a-number", CAMS, None).await;
    assert_eq!(status, 400, "{bad}");

    // Cancelled after its first recordings: nothing more reaches the bus, whatever the wait.
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.job(&job["id"]).await["queued"].as_i64() < Some(1) {
        assert!(Instant::now() < deadline, "nothing queued");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, cancelled) = api.call(reqwest::Method::DELETE, &path, CAMS, None).await;
    assert_eq!((status, cancelled["state"].as_str()), (200, Some("cancelled")), "{cancelled}");
    let queued = cancelled["queued"].as_i64().unwrap();
    assert!(queued < 12, "{cancelled}");
    // At a recording a second, three seconds would have queued about three more.
    assert_eq!(sent(&mut topic, Duration::from_secs(3)).await as i64, queued, "only what was queued before the cancel");
    let job_now = api.job(&job["id"]).await;
    assert_eq!((job_now["state"].as_str(), job_now["queued"].as_i64()), (Some("cancelled"), Some(queued)));
    let (status, again) = api.call(reqwest::Method::DELETE, &path, CAMS, None).await;
    assert_eq!((status, again["state"].as_str()), (200, Some("cancelled")), "a retried cancel answers the job again");

    // A finished job is a conflict; the list holds both, newest first.
    let fast = json!({"group": "default", "from": 1_699_999_000, "to": 1_700_000_100, "rate": 200});
    let (_, done) = api.call(reqwest::Method::POST, "/api/v1/reanalyse", CAMS, Some(fast)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.job(&done["id"]).await["state"] != "done" {
        assert!(Instant::now() < deadline, "the fast job did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, conflict) =
        api.call(reqwest::Method::DELETE, &format!("/api/v1/reanalyse/{}", done["id"]), CAMS, None).await;
    assert_eq!(status, 409, "{conflict}");
    assert!(conflict["error"].as_str().unwrap().contains("done"), "{conflict}");
    let (_, list) = api.call(reqwest::Method::GET, "/api/v1/reanalyse", CAMS, None).await;
    let states: Vec<(&Value, &str)> =
        list["jobs"].as_array().unwrap().iter().map(|j| (&j["id"], j["state"].as_str().unwrap())).collect();
    assert_eq!(states, [(&done["id"], "done"), (&job["id"], "cancelled")], "{list}");
    assert_eq!(sent(&mut topic, Duration::from_secs(2)).await, 12, "the second job sent every recording");
    vault.stop().await.unwrap();
}

/// A follower that sees every recording queued must see the job done in the same answer: the
/// CLI ends its follow there. The last batch used to be marked done only on the next turn when
/// it filled the turn's credit exactly.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_is_done_as_soon_as_its_last_recording_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, api, _bus) = vault_with_recordings(dir.path()).await;
    // Three recordings at two a second: one a turn, so the last turn's credit is used up exactly.
    let range = json!({"group": "default", "from": 1_700_000_000, "to": 1_700_000_003, "rate": 2});
    let (status, job) = api.call(reqwest::Method::POST, "/api/v1/reanalyse", CAMS, Some(range)).await;
    assert_eq!((status, job["total"].as_i64()), (202, Some(3)), "{job}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = api.job(&job["id"]).await;
        if now["queued"] == now["total"] {
            assert_eq!(now["state"], "done", "{now}");
            break;
        }
        assert!(Instant::now() < deadline, "not every recording was queued: {now}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    vault.stop().await.unwrap();
}

/// A job counts the results its own requests brought back, by the model that made them: live
/// results indexed over its range meanwhile (another group, or its own group's live analysis)
/// do not make it look further along.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_counts_only_the_results_of_its_own_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, api, bus) = vault_with_recordings(dir.path()).await;
    let mut topic = bus.subscribe(TOPIC, "test").await.unwrap();
    let range = json!({"group": "default", "from": 1_700_000_000, "to": 1_700_000_003, "rate": 100});
    let (status, job) = api.call(reqwest::Method::POST, "/api/v1/reanalyse", CAMS, Some(range)).await;
    assert_eq!((status, job["total"].as_i64()), (202, Some(3)), "{job}");
    let mut requests = Vec::new();
    for _ in 0..3 {
        let m = tokio::time::timeout(Duration::from_secs(30), topic.recv()).await.expect("a request").unwrap();
        topic.commit(&m).await.unwrap();
        requests.push(serde_json::from_slice::<osprey_core::ChunkEvent>(&m.payload).unwrap());
    }
    assert!(requests.iter().all(|e| e.reanalyse_job == job["id"].as_i64()), "each request names its job");

    // Live results of every recording by another model, then the job's own for two of them,
    // then a live result of the job's model for one of those two.
    let publish = async |event: &osprey_core::ChunkEvent, model: &str, job: Option<i64>| {
        let mut result = osprey_testkit::detection_result(event.chunk_id.as_str(), model, vec![]);
        result.event = osprey_core::ChunkEvent { reanalyse_job: job, ..event.clone() };
        // Tells the last, live result apart from the one it replaces.
        result.data.frames_analyzed = if job.is_none() { 21 } else { 20 };
        let payload = serde_json::to_vec(&result).unwrap();
        bus.publish(osprey_core::TOPIC_DETECTIONS, "cams", &payload).await.unwrap();
    };
    for event in &requests {
        publish(event, "people-1", None).await;
    }
    for event in &requests[..2] {
        publish(event, "cars-2", event.reanalyse_job).await;
    }
    publish(&requests[0], "cars-2", None).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    // Results are indexed in the order published: once the last is in, so are the others.
    while !last_result_indexed(&api, &requests[0]).await {
        assert!(Instant::now() < deadline, "the results were not indexed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let now = api.job(&job["id"]).await;
    assert_eq!(now["analysed"], json!({"cars-2": 2}), "{now}");
    vault.stop().await.unwrap();
}

/// Whether the live result of cars-2 that comes last has replaced the job's own.
async fn last_result_indexed(api: &Api, event: &osprey_core::ChunkEvent) -> bool {
    let path = format!("/api/v1/recordings/{}/detections", event.chunk_id);
    let (_, d) = api.call(reqwest::Method::GET, &path, CAMS, None).await;
    let results = d["results"].as_array().cloned().unwrap_or_default();
    results.iter().any(|r| r["model"] == "cars-2" && r["frames_analyzed"] == 21)
}
