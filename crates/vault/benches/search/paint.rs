//! The web app's pages in Chromium over the seeded index: for each, from the start of loading
//! the page to its content drawn (the page's data fetched, rendered, and a frame painted), the
//! median and worst of a few fresh loads. Each load is a new document, so nothing is cached in
//! the page; the browser's HTTP cache is off.

use chromiumoxide::cdp::browser_protocol::network::SetCacheDisabledParams;
use chromiumoxide::Page;
use std::path::Path;

const LOADS: usize = 5;

pub struct Paint {
    pub page: &'static str,
    /// First contentful paint (the shell's "Loading…"), ms.
    pub first_paint: f64,
    /// The page's content drawn, ms: median and worst.
    pub p50: f64,
    pub max: f64,
}

/// `(name, hash route, what is on screen once the page has drawn its content)`.
fn pages(device: &str, chunk: &str) -> Vec<(&'static str, String, &'static str)> {
    let busy = "document.querySelector('.events')?.getAttribute('aria-busy') === 'false' \
                && document.querySelectorAll('.events .card').length > 0";
    vec![
        ("cameras (all 500)", "#/".into(), "document.querySelectorAll('.cameras .card').length === 500"),
        (
            "timeline (a camera's day)",
            format!("#/timeline/{device}"),
            "document.querySelector('.strip[data-recordings]')",
        ),
        (
            "timeline (an hour)",
            format!("#/timeline/{device}?hour=0"),
            "document.querySelector('.strip[data-recordings]')",
        ),
        ("events (newest)", "#/events".into(), busy),
        ("events ?label=dog", "#/events?label=dog".into(), busy),
        ("events ?camera&label", format!("#/events?device={device}&label=person"), busy),
        (
            "player (a recording's tracks)",
            format!("#/play/{chunk}"),
            "document.querySelectorAll('.tracks li').length > 0",
        ),
        ("system", "#/system".into(), "!document.querySelector('.facts')?.textContent.includes('…')"),
    ]
}

pub async fn measure(base: &str, (access, secret): (&str, &str), device: &str, chunk: &str, dir: &Path) -> Vec<Paint> {
    let Some((mut browser, events)) = osprey_testkit::launch_chromium(&dir.join("chromium")).await else {
        return Vec::new();
    };
    let page = browser.new_page("about:blank").await.unwrap();
    page.execute(SetCacheDisabledParams::new(true)).await.unwrap();
    page.goto(format!("{base}/")).await.unwrap();
    let body = serde_json::json!({"access_key": access, "secret_key": secret});
    let signed_in = format!(
        "async () => (await fetch('/api/v1/session', {{method: 'POST', headers: {{'content-type': 'application/json'}}, \
         body: JSON.stringify({body})}})).status"
    );
    let status: u16 = page.evaluate_function(signed_in).await.unwrap().into_value().unwrap();
    assert_eq!(status, 200, "sign-in for the web bench");
    let mut out = Vec::new();
    for (name, route, drawn) in pages(device, chunk) {
        let mut times = Vec::new();
        let mut first = Vec::new();
        for _ in 0..LOADS {
            page.goto("about:blank").await.unwrap();
            page.goto(format!("{base}/{route}")).await.unwrap();
            let (fcp, done) = content_drawn(&page, name, drawn).await;
            first.push(fcp);
            times.push(done);
        }
        times.sort_by(f64::total_cmp);
        first.sort_by(f64::total_cmp);
        out.push(Paint { page: name, first_paint: first[LOADS / 2], p50: times[LOADS / 2], max: times[LOADS - 1] });
    }
    browser.close().await.unwrap();
    browser.wait().await.unwrap();
    events.abort();
    out
}

/// Milliseconds from the start of the page's navigation to its first contentful paint and to
/// `drawn` being true with a frame painted after it.
async fn content_drawn(page: &Page, name: &str, drawn: &str) -> (f64, f64) {
    let f = format!(
        "async () => {{ const frame = () => new Promise((r) => requestAnimationFrame(r)); \
         const deadline = performance.now() + 30000; \
         while (!({drawn})) {{ if (performance.now() > deadline) return false; await frame(); }} \
         await frame(); await frame(); const done = performance.now(); \
         const fcp = performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? done; \
         return [fcp, done]; }}"
    );
    let v: serde_json::Value = page.evaluate_function(f).await.unwrap().into_value().unwrap();
    if let Ok(times) = serde_json::from_value(v) {
        return times;
    }
    let url = page.url().await.ok().flatten();
    let shown: String =
        page.evaluate("document.querySelector('main')?.innerText ?? ''").await.unwrap().into_value().unwrap();
    panic!("{name}: its content was not drawn within 30 s ({url:?}); the page shows: {shown}")
}

pub fn print_table(rows: &[Paint], events: usize) {
    println!("\nweb app over {events} events and 500 cameras (SQLite), Chromium headless, {LOADS} fresh loads each");
    println!("{:<32} | {:>16} | {:>16} | {:>10}", "page", "first paint (ms)", "content p50 (ms)", "max (ms)");
    for r in rows {
        println!("{:<32} | {:>16.0} | {:>16.0} | {:>10.0}", r.page, r.first_paint, r.p50, r.max);
    }
    let worst = rows.iter().map(|r| r.max).fold(0.0, f64::max);
    println!("worst page: {worst:.0} ms to its content (goal: under 1000 ms)");
}
