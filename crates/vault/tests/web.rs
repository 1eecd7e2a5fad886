//! The web app's side of the vault: the page and its bundle are served offline, and people sign
//! in with an account's keys into a session cookie that reaches only that account's data, needs
//! its CSRF token to change anything, ends at sign-out, and cannot be guessed at for long.

mod common;

use common::{json, TestVault, ALICE, BOB};
use osprey_bus::{Bus, EmbeddedBus};
use reqwest::header::{COOKIE, SET_COOKIE};
use std::sync::Arc;

async fn vault() -> (tempfile::TempDir, TestVault) {
    let dir = tempfile::tempdir().unwrap();
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::open(&dir.path().join("bus.db")).await.unwrap());
    bus.create_topic(osprey_core::TOPIC_CHUNKS, 1).await.unwrap();
    (dir, TestVault::start(bus).await)
}

/// Signs in; the `Cookie` header value and the CSRF token.
async fn sign_in(v: &TestVault, (access, secret): (&str, &str)) -> (String, String) {
    let body = serde_json::json!({"access_key": access, "secret_key": secret});
    let resp = v.http.post(format!("{}/api/v1/session", v.base)).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let set = resp.headers()[SET_COOKIE].to_str().unwrap().to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "{set}");
    }
    assert!(!set.contains("Secure"), "plain http on 127.0.0.1: {set}");
    let cookie = set.split(';').next().unwrap().to_string();
    (cookie, json(resp).await["csrf_token"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_and_its_bundle_are_served_with_a_strict_policy() {
    let (_dir, mut v) = vault().await;
    let page = v.http.get(format!("{}/", v.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(html.contains("/app/app.js") && !html.contains("http"), "nothing from elsewhere: {html}");
    let script = v.http.get(format!("{}/app/app.js", v.base)).send().await.unwrap();
    assert_eq!(script.headers()["content-type"], "text/javascript; charset=utf-8");
    let etag = script.headers()["etag"].clone();
    assert!(script.bytes().await.unwrap().len() > 1000);
    let again = v.http.get(format!("{}/app/app.js", v.base)).header("if-none-match", etag).send().await.unwrap();
    assert_eq!(again.status(), 304);
    let missing = v.http.get(format!("{}/app/../Cargo.toml", v.base)).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    v.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_reaches_its_own_account_only_and_changes_nothing_without_its_token() {
    let (_dir, mut v) = vault().await;
    let name = "1700000000_6-967003_frontdoor_0-0-0-0_-1_10000.mp4";
    let overrides = [("X-Kerberos-Storage-Device", "frontdoor"), ("X-Kerberos-Storage-Directory", "alice")];
    let body = osprey_testkit::mp4_like_bytes(2000, 1);
    let resp = v.kerberos_upload_with(ALICE, name, body, &overrides).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let chunk = json(resp).await["chunk_id"].as_str().unwrap().to_string();

    let get = |cookie: &str, path: &str| v.http.get(format!("{}{path}", v.base)).header(COOKIE, cookie).send();
    let (alice, alice_csrf) = sign_in(&v, ALICE).await;
    let (bob, _) = sign_in(&v, BOB).await;
    let session = json(get(&alice, "/api/v1/session").await.unwrap()).await;
    assert_eq!(session["account"], "alice");
    let devices = json(get(&alice, "/api/v1/devices").await.unwrap()).await;
    assert_eq!(devices["devices"][0]["device"], "frontdoor");
    assert_eq!(get(&alice, &format!("/api/v1/recordings/{chunk}")).await.unwrap().status(), 200);
    // Bob's session sees none of it.
    assert!(json(get(&bob, "/api/v1/devices").await.unwrap()).await["devices"].as_array().unwrap().is_empty());
    assert_eq!(get(&bob, &format!("/api/v1/recordings/{chunk}")).await.unwrap().status(), 404);
    // A made-up cookie is nobody.
    let forged = format!("osprey_session={}", "0".repeat(64));
    assert_eq!(get(&forged, "/api/v1/devices").await.unwrap().status(), 401);
    assert!(json(get(&forged, "/api/v1/session").await.unwrap()).await.is_null());

    // Signing out changes state: without the token it is refused, with it the cookie dies.
    let out = || v.http.delete(format!("{}/api/v1/session", v.base)).header(COOKIE, &alice);
    let refused = out().send().await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(json(refused).await["error"].as_str().unwrap().contains("X-CSRF-Token"));
    assert_eq!(out().header("x-csrf-token", "wrong").send().await.unwrap().status(), 403);
    assert_eq!(out().header("x-csrf-token", &alice_csrf).send().await.unwrap().status(), 204);
    assert_eq!(get(&alice, "/api/v1/devices").await.unwrap().status(), 401);
    assert!(json(get(&bob, "/api/v1/devices").await.unwrap()).await["devices"].is_array(), "bob stays signed in");
    v.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_keys_cannot_sign_in_and_a_client_that_keeps_guessing_is_held_back() {
    let (_dir, mut v) = vault().await;
    let try_keys = |secret: &str| {
        let body = serde_json::json!({"access_key": ALICE.0, "secret_key": secret});
        v.http.post(format!("{}/api/v1/session", v.base)).json(&body).send()
    };
    for _ in 0..10 {
        let resp = try_keys("guess").await.unwrap();
        assert_eq!(resp.status(), 403);
        assert!(resp.headers().get(SET_COOKIE).is_none());
    }
    let held = try_keys(ALICE.1).await.unwrap();
    assert_eq!(held.status(), 429, "even the right keys wait once a client guessed too often");
    assert!(held.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() > 0);
    let bad = v.http.post(format!("{}/api/v1/session", v.base)).body("access_key=x").send().await.unwrap();
    // Not JSON: refused as a form would be, before any key is looked at.
    assert_eq!(bad.status(), 415);
    v.stop().await;
}

/// The player's video element seeks with `Range` requests: a signed link answers each with the
/// bytes asked for, and a range past the end with a JSON 416.
#[tokio::test(flavor = "multi_thread")]
async fn signed_downloads_answer_range_requests() {
    let (_dir, mut v) = vault().await;
    let name = "1700000000_6-967003_frontdoor_0-0-0-0_-1_10001.mp4";
    let body = osprey_testkit::mp4_like_bytes(5000, 3);
    let resp = v.kerberos_upload(ALICE, name, body.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let chunk = json(resp).await["chunk_id"].as_str().unwrap().to_string();
    let link = v.http.get(format!("{}/api/v1/recordings/{chunk}/url", v.base)).basic_auth(ALICE.0, Some(ALICE.1));
    let url = json(link.send().await.unwrap()).await["url"].as_str().unwrap().to_string();
    let get = |range: Option<&str>| {
        let mut r = v.http.get(&url);
        if let Some(range) = range {
            r = r.header("range", range);
        }
        r.send()
    };
    let whole = get(None).await.unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    assert_eq!(whole.bytes().await.unwrap(), body);
    let len = body.len();
    for (range, from, to) in [("bytes=100-199", 100, 200), ("bytes=-10", len - 10, len), ("bytes=4000-", 4000, len)] {
        let part = get(Some(range)).await.unwrap();
        assert_eq!(part.status(), 206, "{range}");
        assert_eq!(part.headers()["content-range"], format!("bytes {from}-{}/{len}", to - 1), "{range}");
        assert_eq!(part.bytes().await.unwrap(), body[from..to], "{range}");
    }
    let past = get(Some("bytes=999999-")).await.unwrap();
    assert_eq!(past.status(), 416);
    assert_eq!(past.headers()["content-range"], format!("bytes */{len}"));
    assert!(json(past).await["error"].as_str().unwrap().contains("outside"));
    let bad = v.http.get(format!("{}/api/v1/devices?events_since=soon", v.base)).basic_auth(ALICE.0, Some(ALICE.1));
    let bad = bad.send().await.unwrap();
    assert_eq!(bad.status(), 400);
    assert!(json(bad).await["error"].as_str().unwrap().contains("invalid query"));
    v.stop().await;
}
