//! The vault's key checks, sessions and live streams tried from the attacker's side (issue 26):
//! guessing keys on every endpoint that takes them, a session kept after its keys were rotated or
//! removed, a cross-site page signing a browser in, a live stream kept after sign-out, and one
//! account's streams crowding out everyone's API calls. Each test failed on the code before.

mod common;

use common::*;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use osprey_bus::EmbeddedBus;
use osprey_core::Clock;
use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::StatusCode;
use std::sync::Arc;
use std::time::Duration;

async fn vault_with(tweak: fn(&mut osprey_vault::Setup)) -> TestVault {
    TestVault::start_with(Arc::new(EmbeddedBus::in_memory().await.unwrap()), tweak).await
}

/// Signs in; the `Cookie` value and the CSRF token.
async fn sign_in(t: &TestVault, (access, secret): (&str, &str)) -> (String, String) {
    let body = serde_json::json!({"access_key": access, "secret_key": secret});
    let resp = t.http.post(format!("{}/api/v1/session", t.base)).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let cookie = resp.headers()[SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_string();
    (cookie, json(resp).await["csrf_token"].as_str().unwrap().to_string())
}

/// Every way a request can carry keys, each a request with `creds`.
fn key_requests(t: &TestVault, creds: (&str, &str)) -> Vec<(&'static str, reqwest::RequestBuilder)> {
    let kerberos = |r: reqwest::RequestBuilder| {
        r.header("X-Kerberos-Storage-AccessKey", creds.0).header("X-Kerberos-Storage-SecretAccessKey", creds.1)
    };
    let url = |path: &str| format!("{}{path}", t.base);
    vec![
        ("POST /ping", kerberos(t.http.post(url("/ping")))),
        ("GET /api/v1/devices with Kerberos headers", kerberos(t.http.get(url("/api/v1/devices")))),
        ("GET /api/v1/events with Basic", t.http.get(url("/api/v1/events")).basic_auth(creds.0, Some(creds.1))),
        (
            "POST /storage/tus/",
            kerberos(t.http.post(url("/storage/tus/")))
                .header("Tus-Resumable", "1.0.0")
                .header("Upload-Length", "100")
                .header("X-Kerberos-Storage-FileName", FILE_NAME)
                .header("X-Kerberos-Storage-Provider", "local")
                .header("X-Kerberos-Storage-Device", "cam"),
        ),
        ("GET /storage", kerberos(t.http.get(url("/storage"))).header("X-Kerberos-Storage-FileName", FILE_NAME)),
        ("POST /devices/heartbeat", kerberos(t.http.post(url("/devices/heartbeat"))).json(&serde_json::json!({}))),
        (
            "POST /api/v1/session",
            t.http
                .post(url("/api/v1/session"))
                .json(&serde_json::json!({"access_key": creds.0, "secret_key": creds.1})),
        ),
    ]
}

async fn metric(t: &TestVault, name: &str) -> f64 {
    let text = t.http.get(format!("{}/metrics", t.base)).send().await.unwrap().text().await.unwrap();
    text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn guessing_keys_is_limited_on_every_endpoint_that_takes_them() {
    let t = vault_with(|_| {}).await;
    let wrong = (ALICE.0, "guess");
    // Ten guesses spread over the endpoints: each answered 403, as a wrong key is.
    let mut tries = 0;
    while tries < 10 {
        for (what, request) in key_requests(&t, wrong) {
            if tries == 10 {
                break;
            }
            assert_eq!(request.send().await.unwrap().status(), StatusCode::FORBIDDEN, "{what}");
            tries += 1;
        }
    }
    // Then every endpoint is held back, right keys included (else the limit tells which are right).
    for creds in [wrong, ALICE] {
        for (what, request) in key_requests(&t, creds) {
            let resp = request.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS, "{what} with {creds:?}");
            let wait: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!(wait > 0 && wait <= 300, "{what}: {wait}");
            let body = json(resp).await;
            assert!(body["error"].is_string() && body["kind"].is_string(), "{what}: {body}");
        }
    }
    // Bob behind the same address (one proxy for everyone) is not locked out by Alice's guesser.
    for (what, request) in key_requests(&t, BOB) {
        let status = request.send().await.unwrap().status();
        assert!(status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::FORBIDDEN, "{what}: {status}");
    }
    assert!(metric(&t, "osprey_vault_auth_limited_total").await >= 14.0);
    assert!(metric(&t, "osprey_vault_auth_failures_total").await >= 10.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parallel_burst_of_guesses_gets_exactly_the_limit_through() {
    let t = vault_with(|_| {}).await;
    let answers = futures::future::join_all(
        (0..40).map(|_| t.http.post(format!("{}/ping", t.base)).basic_auth(ALICE.0, Some("guess")).send()),
    )
    .await;
    let statuses: Vec<u16> = answers.into_iter().map(|r| r.unwrap().status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 403).count(), 10, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 30, "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn made_up_access_keys_are_limited_per_client_too() {
    let t = vault_with(|_| {}).await;
    for i in 0..20 {
        let resp = t.http.post(format!("{}/ping", t.base)).basic_auth(format!("made-up-{i}"), Some("x")).send().await;
        assert_eq!(resp.unwrap().status(), 403);
    }
    let resp = t.http.post(format!("{}/ping", t.base)).basic_auth("made-up-99", Some("x")).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    // A configured account from this client is counted on its own.
    let alice = t.http.post(format!("{}/ping", t.base)).basic_auth(ALICE.0, Some(ALICE.1)).send().await.unwrap();
    assert_eq!(alice.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_ends_when_its_keys_are_rotated_or_removed() {
    let mut t = vault_with(|_| {}).await;
    let (alice, _) = sign_in(&t, ALICE).await;
    let (bob, _) = sign_in(&t, BOB).await;
    let devices = |t: &TestVault, cookie: &str| {
        t.http.get(format!("{}/api/v1/devices", t.base)).header(COOKIE, cookie.to_string()).send()
    };
    assert_eq!(devices(&t, &alice).await.unwrap().status(), 200);
    // Alice's secret leaked: it is rotated and the vault restarted. Bob's account is removed.
    t.tweak = |c| {
        c.vault.accounts[0].secret_key = "alice-rotated-secret-999".into();
        c.vault.accounts.truncate(1);
    };
    t.restart(Arc::new(EmbeddedBus::in_memory().await.unwrap())).await;
    assert_eq!(devices(&t, &alice).await.unwrap().status(), 401, "the attacker's session ended");
    let session = t.http.get(format!("{}/api/v1/session", t.base)).header(COOKIE, &alice).send().await.unwrap();
    assert!(json(session).await.is_null());
    assert_eq!(devices(&t, &bob).await.unwrap().status(), 401);
    // The new keys sign in as before.
    let (fresh, _) = sign_in(&t, (ALICE.0, "alice-rotated-secret-999")).await;
    assert_eq!(devices(&t, &fresh).await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cross_site_page_cannot_sign_a_browser_in() {
    let t = vault_with(|_| {}).await;
    let url = format!("{}/api/v1/session", t.base);
    let keys = format!(r#"{{"access_key":"{}","secret_key":"{}"}}"#, ALICE.0, ALICE.1);
    let form = t.http.post(&url).header("content-type", "text/plain").body(keys.clone()).send().await.unwrap();
    assert_eq!(form.status(), 415, "a form can post text/plain");
    assert!(form.headers().get(SET_COOKIE).is_none());
    let urlencoded = t.http.post(&url).header("content-type", "application/x-www-form-urlencoded").body("a=b");
    assert_eq!(urlencoded.send().await.unwrap().status(), 415);
    let json_post = |origin: Option<&str>, site: Option<&str>| {
        let mut r = t.http.post(&url).header("content-type", "application/json").body(keys.clone());
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        if let Some(s) = site {
            r = r.header("sec-fetch-site", s);
        }
        r.send()
    };
    for (origin, site) in [
        (Some("http://evil.example"), None),
        (Some("null"), None),
        (Some("http://evil.example"), Some("cross-site")),
        (None, Some("cross-site")),
    ] {
        let resp = json_post(origin, site).await.unwrap();
        assert_eq!(resp.status(), 403, "{origin:?} {site:?}");
        assert!(resp.headers().get(SET_COOKIE).is_none());
    }
    let host = t.base.trim_start_matches("http://").to_string();
    let same = json_post(Some(&format!("http://{host}")), Some("same-origin")).await.unwrap();
    assert_eq!(same.status(), 200, "the web app itself");
    assert_eq!(json_post(None, None).await.unwrap().status(), 200, "curl and scripts send no Origin");
}

/// Opens `GET /api/v1/live` with a cookie; the events' names as they come.
async fn live(t: &TestVault, cookie: &str) -> reqwest::Response {
    t.http.get(format!("{}/api/v1/live", t.base)).header(COOKIE, cookie).send().await.unwrap()
}

/// The next event name on a stream, `None` when it ended, or `Some("(silent)")` after `wait`.
async fn next_event<S>(events: &mut S, wait: Duration) -> Option<String>
where
    S: futures::Stream<Item = Result<eventsource_stream::Event, eventsource_stream::EventStreamError<reqwest::Error>>>
        + Unpin,
{
    match tokio::time::timeout(wait, events.next()).await {
        Err(_) => Some("(silent)".into()),
        Ok(None) | Ok(Some(Err(_))) => None,
        Ok(Some(Ok(e))) => Some(e.event),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_stream_ends_with_its_session() {
    let t = vault_with(|c| c.vault.live_recheck = Duration::from_secs(1)).await;
    let upload = |i: usize| t.kerberos_upload(ALICE, &file_name(i), mp4_bytes(1000, i as u8)).send();
    // Signed out on this replica: the stream ends at once and carries nothing more.
    let (cookie, csrf) = sign_in(&t, ALICE).await;
    let mut events = live(&t, &cookie).await.bytes_stream().eventsource();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(upload(1).await.unwrap().status(), 200);
    assert_eq!(next_event(&mut events, Duration::from_secs(10)).await.as_deref(), Some("recording"));
    let out = t.http.delete(format!("{}/api/v1/session", t.base)).header(COOKIE, &cookie).header("x-csrf-token", csrf);
    assert_eq!(out.send().await.unwrap().status(), 204);
    assert_eq!(upload(2).await.unwrap().status(), 200);
    assert_eq!(next_event(&mut events, Duration::from_secs(10)).await, None, "the stream ended");

    // Expired: the stream ends at its next look.
    let (cookie, _) = sign_in(&t, ALICE).await;
    let mut events = live(&t, &cookie).await.bytes_stream().eventsource();
    t.clock.advance(Duration::from_secs(13 * 3600));
    assert_eq!(upload(3).await.unwrap().status(), 200);
    assert_eq!(next_event(&mut events, Duration::from_secs(10)).await, None, "an expired session's stream ended");
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_are_capped_per_session_and_account_and_leave_room_for_api_calls() {
    let t = vault_with(|c| {
        c.vault.live_streams_per_account = 6;
        c.vault.live_streams_per_session = 4;
        c.vault.live_streams_per_client = 8;
        c.vault.max_connections_per_client = 12;
    })
    .await;
    let (first, _) = sign_in(&t, ALICE).await;
    let (second, _) = sign_in(&t, ALICE).await;
    // Each stream holds a connection of its own.
    let client = || reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let open = |cookie: String| {
        let (http, base) = (client(), t.base.clone());
        async move { http.get(format!("{base}/api/v1/live")).header(COOKIE, cookie).send().await.unwrap() }
    };
    let mut held = Vec::new();
    for _ in 0..4 {
        let resp = open(first.clone()).await;
        assert_eq!(resp.status(), 200);
        held.push(resp);
    }
    let over = open(first.clone()).await;
    assert_eq!(over.status(), 429, "a fifth stream of one session");
    assert!(over.headers().contains_key("retry-after"));
    for _ in 0..2 {
        let resp = open(second.clone()).await;
        assert_eq!(resp.status(), 200);
        held.push(resp);
    }
    assert_eq!(open(second.clone()).await.status(), 429, "a seventh stream of the account");
    // With the account's streams at the cap, an API call from the same address still answers.
    let answers = |cookie: String| {
        let call = client().get(format!("{}/api/v1/devices", t.base)).header(COOKIE, cookie).send();
        async move {
            let answered = tokio::time::timeout(Duration::from_secs(1), call).await.expect("answered within 1 s");
            assert_eq!(answered.unwrap().status(), 200);
        }
    };
    answers(first.clone()).await;
    // A stream closed frees its place.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = open(second.clone()).await;
    assert_eq!(again.status(), 200);
    held.push(again);
    // One address holding a second account: its streams count against the address's cap too.
    let (bob, _) = sign_in(&t, BOB).await;
    for _ in 0..2 {
        let resp = open(bob.clone()).await;
        assert_eq!(resp.status(), 200);
        held.push(resp);
    }
    let over = open(bob.clone()).await;
    assert_eq!(over.status(), 429, "a ninth stream from one address");
    assert!(json(over).await["error"].as_str().unwrap().contains("client"));
    answers(bob).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn times_that_would_overflow_are_refused_naming_the_parameter() {
    let t = vault_with(|_| {}).await;
    let get = |path: String| t.http.get(format!("{}{path}", t.base)).basic_auth(ALICE.0, Some(ALICE.1)).send();
    let extremes = ["-9223371000000000", "-9223372036854775808", "9223372036854775807", "-9223372036854775", "-1"];
    for value in extremes {
        for (path, name) in [
            (format!("/api/v1/summary?from={value}"), "from"),
            (format!("/api/v1/summary?to={value}"), "to"),
            (format!("/api/v1/summary?bucket=day&from={value}&to=1700000000"), "from"),
            (format!("/api/v1/devices?events_since={value}"), "events_since"),
            (format!("/api/v1/events?from={value}"), "from"),
            (format!("/api/v1/events?to={value}"), "to"),
            (format!("/api/v1/recordings?from={value}"), "from"),
            (format!("/api/v1/recordings?to={value}"), "to"),
        ] {
            let resp = get(path.clone()).await.unwrap();
            assert_eq!(resp.status(), 400, "{path}");
            let body = json(resp).await;
            assert!(body["error"].as_str().unwrap().contains(name), "{path}: {body}");
        }
    }
    for (path, what) in [
        ("/api/v1/summary?from=1700000000&to=1600000000", "from is after to"),
        ("/api/v1/events?from=1700000000&to=1600000000", "from is after to"),
        ("/api/v1/recordings?from=1700000000&to=1600000000", "from is after to"),
        ("/api/v1/summary?from=0&to=99999999999", "apart"),
        ("/api/v1/summary?from=1e30", "from"),
        ("/api/v1/summary?from=NaN", "from"),
    ] {
        let resp = get(path.to_string()).await.unwrap();
        assert_eq!(resp.status(), 400, "{path}");
        assert!(json(resp).await["error"].as_str().unwrap().contains(what), "{path}");
    }
    let job = |body: serde_json::Value| {
        t.http.post(format!("{}/api/v1/reanalyse", t.base)).basic_auth(ALICE.0, Some(ALICE.1)).json(&body).send()
    };
    for body in [
        serde_json::json!({"group": "default", "from": i64::MIN}),
        serde_json::json!({"group": "default", "to": i64::MAX}),
        serde_json::json!({"group": "default", "from": -9_223_371_000_000_000i64, "to": 1_700_000_000}),
    ] {
        let resp = job(body.clone()).await.unwrap();
        assert_eq!(resp.status(), 400, "{body}");
    }
    let fine = get("/api/v1/summary?from=1700000000&to=1700086399".into()).await.unwrap();
    assert_eq!(fine.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_name_with_an_impossible_time_is_not_believed() {
    let t = vault_with(|_| {}).await;
    let now = t.clock.unix_secs();
    let t = &t;
    let upload = |name: &'static str, seed: u8| async move {
        let resp = t.kerberos_upload(ALICE, name, mp4_bytes(1000, seed)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{name}");
        let id = json(resp).await["chunk_id"].as_str().unwrap().to_string();
        json(t.api(ALICE, &format!("/api/v1/recordings/{id}")).send().await.unwrap()).await["recorded_at"]
            .as_i64()
            .unwrap()
    };
    // Past any time (and past i64 as milliseconds): stored at the upload time.
    for (seed, name) in
        ["9223372036854775807_3-500_cam_0-0-0-0_-1_9000.mp4", "18446744073709551615_3-500_cam_0-0-0-0_-1_9001.mp4"]
            .into_iter()
            .enumerate()
    {
        let at = upload(name, seed as u8).await;
        // The vault's manual clock moves on as its tasks sleep.
        let after = t.clock.unix_secs();
        assert!((now - 1..=after + 1).contains(&at), "{name}: recorded_at {at}, upload between {now} and {after}");
    }
    // A negative sub-second is no sub-second: the start is the whole second, not 50 ms before it.
    assert_eq!(upload("1700000000_3--50_cam_0-0-0-0_-1_9002.mp4", 7).await, 1_700_000_000);
}
