//! The web app the way people use it: Debian's Chromium (headless, driven over the DevTools
//! protocol) against a real `osprey up` on the bundled sample, with two accounts.
//!
//! Every page's requests and console are watched from the start: a failed request or a console
//! error fails the test, except the ones a step provokes on purpose (a wrong key, account B
//! asking for account A's recording). Screenshots land in `target/test-artifacts/web/`.

use chromiumoxide::cdp::browser_protocol::log::EventEntryAdded;
use chromiumoxide::cdp::browser_protocol::network::{EventLoadingFailed, EventResponseReceived};
use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::cdp::js_protocol::runtime::{ConsoleApiCalledType, EventConsoleApiCalled, EventExceptionThrown};
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::Page;
use futures::StreamExt;
use serde_json::Value;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

const A: (&str, &str) = ("home-key", "home-secret-0123456789");
const B: (&str, &str) = ("shop-key", "shop-secret-0123456789");

/// `osprey up` on the sample, until it says where the web app is.
struct Up {
    child: Child,
    base: String,
    output: Arc<Mutex<Vec<String>>>,
}

impl Up {
    fn start(dir: &Path) -> Up {
        let config = dir.join("osprey.toml");
        let account = |name: &str, (key, secret): (&str, &str)| {
            format!("[[vault.accounts]]\nname = {name:?}\naccess_key = {key:?}\nsecret_key = {secret:?}\n")
        };
        let data = dir.join("data").display().to_string();
        std::fs::write(&config, format!("data_dir = {data:?}\n{}{}", account("home", A), account("shop", B))).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_osprey"));
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("OSPREY_")) {
            command.env_remove(k);
        }
        let mut child = command
            .args(["up", "--config"])
            .arg(&config)
            .env("OSPREY_VAULT__LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let kept = output.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap().push(line.clone());
                tx.send(line).ok();
            }
        });
        let deadline = Instant::now() + Duration::from_secs(600);
        let base = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!("osprey up did not announce the web app; it printed:\n{}", output.lock().unwrap().join("\n"))
            });
            if let Some(rest) = line.strip_prefix("osprey up: the web app is on ") {
                break rest.split_whitespace().next().unwrap().trim_end_matches('/').to_string();
            }
        };
        Up { child, base, output }
    }

    fn printed(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// Ctrl-C, as a user stops it: it must exit cleanly.
    fn stop(mut self) {
        Command::new("kill").args(["-INT", &self.child.id().to_string()]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "osprey up exited with {status}:\n{}", self.printed());
                return;
            }
            assert!(Instant::now() < deadline, "osprey up did not stop within 30 s of Ctrl-C");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// What went wrong in the page: failed requests, error answers, console errors, exceptions.
#[derive(Clone, Default)]
struct Problems(Arc<Mutex<Vec<String>>>);

impl Problems {
    fn add(&self, what: String) {
        self.0.lock().unwrap().push(what);
    }

    /// Takes those that mention `fragment` (the provoked ones), leaving the rest.
    fn take_matching(&self, fragment: &str) -> Vec<String> {
        let mut all = self.0.lock().unwrap();
        let (taken, kept) = all.drain(..).partition(|p: &String| p.contains(fragment));
        *all = kept;
        taken
    }

    fn assert_none(&self, during: &str) {
        let all = self.0.lock().unwrap();
        assert!(all.is_empty(), "{during}: the page had problems:\n{}", all.join("\n"));
    }
}

async fn watch(page: &Page, problems: &Problems) {
    let mut failed = page.event_listener::<EventLoadingFailed>().await.unwrap();
    let mut answers = page.event_listener::<EventResponseReceived>().await.unwrap();
    let mut console = page.event_listener::<EventConsoleApiCalled>().await.unwrap();
    let mut thrown = page.event_listener::<EventExceptionThrown>().await.unwrap();
    let mut log = page.event_listener::<EventEntryAdded>().await.unwrap();
    let p = problems.clone();
    tokio::spawn(async move {
        loop {
            let problem = tokio::select! {
                Some(e) = failed.next() => {
                    // A request the page itself gave up (leaving a page, the video loader
                    // switching to ranges) is not a failure.
                    if e.canceled == Some(true) { continue }
                    format!("request failed: {} ({:?})", e.error_text, e.r#type)
                }
                Some(e) = answers.next() => {
                    if e.response.status < 400 { continue }
                    format!("answer {} for {}", e.response.status, e.response.url)
                }
                Some(e) = console.next() => {
                    if e.r#type != ConsoleApiCalledType::Error { continue }
                    format!("console error: {}", serde_json::to_string(&e.args).unwrap_or_default())
                }
                Some(e) = thrown.next() => format!("exception: {:?}", e.exception_details),
                Some(e) = log.next() => {
                    let level = serde_json::to_value(&e.entry.level).unwrap_or_default();
                    if level != "error" { continue }
                    format!("log error: {} {}", e.entry.text, e.entry.url.clone().unwrap_or_default())
                }
                else => return,
            };
            p.add(problem);
        }
    });
    page.enable_log().await.unwrap();
    page.enable_runtime().await.unwrap();
}

/// Polls a JavaScript condition (the body of a function) in the page until it returns something
/// truthy, and returns that; fails the test after 30 s.
async fn wait_for(page: &Page, what: &str, body: &str) -> Value {
    let f = format!(
        "async () => {{ const deadline = Date.now() + 30000; for (;;) {{ let v; try {{ v = (() => {{ {body} }})(); }} \
         catch (e) {{ v = false; }} if (v) return v; if (Date.now() > deadline) return false; \
         await new Promise((r) => setTimeout(r, 50)); }} }}"
    );
    let v: Value = page.evaluate_function(f).await.unwrap().into_value().unwrap();
    assert_ne!(v, Value::Bool(false), "{what}: not within 30 s (page at {:?})", page.url().await.ok().flatten());
    v
}

async fn eval(page: &Page, js: &str) -> Value {
    page.evaluate_function(format!("async () => {{ {js} }}")).await.unwrap().into_value().unwrap_or(Value::Null)
}

async fn go(page: &Page, base: &str, hash: &str) {
    eval(page, &format!("location.href = {:?}; return true;", format!("{base}/{hash}"))).await;
}

fn artifacts() -> PathBuf {
    let dir = osprey_testkit::repo_root().join("target/test-artifacts/web");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(page: &Page, name: &str) -> Vec<u8> {
    let params = ScreenshotParams::builder().format(CaptureScreenshotFormat::Png).build();
    let png = page.screenshot(params).await.unwrap();
    std::fs::write(artifacts().join(format!("{name}.png")), &png).unwrap();
    png
}

/// RGB pixels and width of a PNG.
fn pixels(png: &[u8]) -> (Vec<u8>, usize) {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let rgb = buf[..info.buffer_size()].chunks(channels).flat_map(|p| [p[0], p[1], p[2]]).collect();
    (rgb, info.width as usize)
}

/// The web app's colour for a label (`colour` in web/src/format.ts): hsl(h, 85%, 55%).
fn label_rgb(label: &str) -> [f64; 3] {
    let h = label.chars().fold(0u32, |h, c| (h * 31 + c as u32) % 360) as f64;
    let (s, l) = (0.85_f64, 0.55_f64);
    let k = |n: f64| (n + h / 30.0) % 12.0;
    let a = s * l.min(1.0 - l);
    let f = |n: f64| 255.0 * (l - a * (k(n) - 3.0).min(9.0 - k(n)).clamp(-1.0, 1.0));
    [f(0.0), f(8.0), f(4.0)]
}

/// Of points sampled along each edge of `rect` (page pixels), the share where the screenshot
/// with the canvas shows the label's colour (within 2 px of the edge) and the one without the
/// canvas does not.
fn edge_hits(with: &[u8], without: &[u8], width: usize, rect: [f64; 4], rgb: [f64; 3]) -> f64 {
    let [x1, y1, x2, y2] = rect;
    let px = |img: &[u8], x: i64, y: i64| {
        let i = 3 * (y as usize * width + x as usize);
        [img[i] as f64, img[i + 1] as f64, img[i + 2] as f64]
    };
    let near = |p: [f64; 3]| p.iter().zip(rgb).all(|(a, b)| (a - b).abs() < 48.0);
    let mut points = Vec::new();
    for i in 1..20 {
        let t = i as f64 / 20.0;
        let (x, y) = (x1 + (x2 - x1) * t, y1 + (y2 - y1) * t);
        points.extend([(x, y1, 0, 1), (x, y2, 0, 1), (x1, y, 1, 0), (x2, y, 1, 0)]);
    }
    let hits = points
        .iter()
        .filter(|(x, y, dx, dy)| {
            (-2..=2).any(|d: i64| {
                let (x, y) = (x.round() as i64 + d * dx, y.round() as i64 + d * dy);
                near(px(with, x, y)) && !near(px(without, x, y))
            })
        })
        .count();
    hits as f64 / points.len() as f64
}

/// Clicks the element `selector` names, then types `text` if any, as a user does: once it is
/// there, again if the page redrew it in between.
async fn click(page: &Page, selector: &str, text: Option<&str>) {
    let found = format!("return document.querySelector({selector:?});");
    for attempt in 0.. {
        wait_for(page, selector, &found).await;
        let done = async {
            let element = page.find_element(selector).await?;
            element.click().await?;
            if let Some(text) = text {
                element.type_str(text).await?;
            }
            Ok::<_, chromiumoxide::error::CdpError>(())
        };
        match done.await {
            Ok(()) => return,
            Err(e) if attempt < 5 => eprintln!("{selector}: {e}; again"),
            Err(e) => panic!("{selector}: {e}"),
        }
    }
}

async fn sign_in(page: &Page, (key, secret): (&str, &str)) {
    click(page, "input[name=access_key]", Some(key)).await;
    click(page, "input[name=secret_key]", Some(secret)).await;
    click(page, "form button[type=submit]", None).await;
}

/// A key pressed and let go, as a keyboard sends it (Tab moves the focus, Enter submits).
async fn press(page: &Page, key: &str, code: i64) {
    use chromiumoxide::cdp::browser_protocol::input::{DispatchKeyEventParams, DispatchKeyEventType};
    for kind in [DispatchKeyEventType::KeyDown, DispatchKeyEventType::KeyUp] {
        let mut event = DispatchKeyEventParams::new(kind.clone());
        event.key = Some(key.into());
        event.code = Some(key.into());
        event.windows_virtual_key_code = Some(code);
        if key == "Enter" && kind == DispatchKeyEventType::KeyDown {
            event.text = Some("\r".into());
        }
        page.execute(event).await.unwrap();
    }
}

/// Text typed into whatever has the focus.
async fn keys(page: &Page, text: &str) {
    use chromiumoxide::cdp::browser_protocol::input::InsertTextParams;
    page.execute(InsertTextParams::new(text)).await.unwrap();
}

async fn focused(page: &Page) -> Value {
    eval(page, "const e = document.activeElement; return e.name || e.textContent.trim();").await
}

/// Signs in with the keyboard alone: the form takes the focus, Tab goes field, field, button.
async fn sign_in_by_keyboard(page: &Page, (key, secret): (&str, &str)) {
    wait_for(page, "the sign-in form", "return document.activeElement?.name === 'access_key';").await;
    keys(page, key).await;
    press(page, "Tab", 9).await;
    assert_eq!(focused(page).await, "secret_key");
    keys(page, secret).await;
    press(page, "Tab", 9).await;
    assert_eq!(focused(page).await, "Sign in");
    press(page, "Enter", 13).await;
}

async fn sign_out(page: &Page) {
    click(page, "header .who button", None).await;
    wait_for(
        page,
        "the sign-in form after signing out",
        "return document.querySelector('form input[name=secret_key]');",
    )
    .await;
}

/// The video at `ms`, paused, its picture decoded and the boxes drawn: how many.
async fn seek(page: &Page, ms: u64) -> u64 {
    eval(
        page,
        &format!(
            "const v = document.querySelector('video'); v.pause(); \
             await new Promise((r) => {{ v.addEventListener('seeked', r, {{ once: true }}); v.currentTime = {}; }}); \
             await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))); return true;",
            ms as f64 / 1000.0
        ),
    )
    .await;
    let drawn = wait_for(
        page,
        "the video at the seeked time",
        "const v = document.querySelector('video'); \
        return v.readyState >= 2 && !v.seeking && document.querySelector('canvas').dataset.boxes;",
    )
    .await;
    drawn.as_str().unwrap().parse().unwrap()
}

/// The biggest box of the chunk's tracks, away from the clip's ends: (track, pts, box).
fn biggest_box(detections: &Value) -> (Value, u64, [f64; 4]) {
    let result = &detections["results"][0];
    let mut best: Option<(Value, u64, [f64; 4])> = None;
    for track in result["tracks"].as_array().unwrap() {
        for b in track["boxes"].as_array().unwrap() {
            let pts = b["pts_ms"].as_u64().unwrap();
            let r: Vec<f64> = b["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            let area = (r[2] - r[0]) * (r[3] - r[1]);
            let better = best.as_ref().is_none_or(|(_, _, o)| area > (o[2] - o[0]) * (o[3] - o[1]));
            if pts >= 1000 && better {
                best = Some((track.clone(), pts, [r[0], r[1], r[2], r[3]]));
            }
        }
    }
    best.expect("a chunk with people has boxes")
}

/// Uploads a Kerberos-style fragmented clip as a new recording of `device`, the way an agent does.
async fn upload_clip(base: &str, device: &str, dir: &Path) {
    let clip = dir.join("live.mp4");
    let sample = osprey_testkit::repo_root().join("samples/vtest.mp4");
    osprey_testkit::kerberos_fragmented(&sample, "20", "4", &clip);
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let resp = reqwest::Client::new()
        .post(format!("{base}/api/storage"))
        .header("Content-Type", "video/mp4")
        .header("X-Kerberos-Storage-AccessKey", A.0)
        .header("X-Kerberos-Storage-SecretAccessKey", A.1)
        .header("X-Kerberos-Storage-FileName", format!("{now}_6-967003_{device}_0-0-768-576_3_900.mp4"))
        .header("X-Kerberos-Storage-Device", device)
        .header("X-Kerberos-Storage-Directory", "home")
        .body(std::fs::read(&clip).unwrap())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_web_app_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mut browser, events)) = osprey_testkit::launch_chromium(&dir.path().join("profile")).await else {
        return;
    };
    let up = Up::start(dir.path());
    let base = up.base.clone();
    let printed = up.printed();
    assert!(printed.contains("8 chunks analysed"), "{printed}");
    assert!(printed.contains("sign in with access key home-key"), "{printed}");
    assert!(!printed.contains(A.1), "a configured secret is never printed: {printed}");

    let page = browser.new_page("about:blank").await.unwrap();
    let problems = Problems::default();
    watch(&page, &problems).await;
    page.goto(format!("{base}/")).await.unwrap();

    // A wrong key cannot sign in, and says so.
    sign_in(&page, (A.0, "not-the-secret")).await;
    let said =
        wait_for(&page, "the sign-in error", "return document.querySelector('#signin-error').textContent;").await;
    assert!(said.as_str().unwrap().contains("wrong"), "{said}");
    let refused = problems.take_matching("/api/v1/session");
    assert!(refused.iter().any(|p| p.contains("answer 403")), "the wrong key was not refused: {refused:?}");
    screenshot(&page, "01-wrong-key").await;
    page.reload().await.unwrap();

    // Account A: its camera, with a thumbnail and today's counts.
    sign_in(&page, A).await;
    let cameras = wait_for(
        &page,
        "the camera with its thumbnail",
        "const cards = [...document.querySelectorAll('.cameras .card')]; \
        return cards.length && cards.every((c) => c.querySelector('img')?.naturalWidth > 0 && c.querySelector('.tag')) \
        && cards.map((c) => c.querySelector('h2').textContent);",
    )
    .await;
    assert_eq!(cameras, serde_json::json!(["sample"]));
    screenshot(&page, "02-cameras").await;
    let devices = osprey_testkit::vault_get(&base, "/api/v1/devices", A).await;
    let device = devices["devices"][0]["device"].as_str().unwrap().to_string();

    // The camera's timeline: the sample's 8 recordings; a chunk uploaded now appears unasked.
    click(&page, ".cameras .card a", None).await;
    wait_for(
        &page,
        "8 recordings on the timeline",
        "return document.querySelector('.strip')?.dataset.recordings === '8';",
    )
    .await;
    screenshot(&page, "03-timeline").await;
    eval(&page, "window.sameDocument = true; return true;").await;
    upload_clip(&base, &device, dir.path()).await;
    wait_for(
        &page,
        "the new recording without a reload",
        "return document.querySelector('.strip')?.dataset.recordings === '9';",
    )
    .await;
    assert_eq!(eval(&page, "return window.sameDocument === true;").await, true, "the page was reloaded");

    // Search for people: events with their thumbnails.
    click(&page, "nav a[href='#/events']", None).await;
    click(&page, "form.filters input[name=label]", Some("person")).await;
    click(&page, "form.filters button[type=submit]", None).await;
    let found = wait_for(
        &page,
        "person events with thumbnails",
        "if (!location.hash.includes('label=person')) return false; \
        if (document.querySelector('.events')?.getAttribute('aria-busy') !== 'false') return false; \
        const cards = [...document.querySelectorAll('.events .card')]; \
        const shown = cards.slice(0, 8).map((c) => c.querySelector('img')); \
        const labels = cards.map((c) => c.querySelector('.tag').textContent.trim()); \
        return cards.length >= 8 && shown.every((i) => i.complete && i.naturalWidth > 0) \
        && labels.every((l) => l === 'person') && labels.length;",
    )
    .await;
    assert!(found.as_u64().unwrap() >= 8, "{found}");
    screenshot(&page, "04-search-person").await;

    // Open one: the player plays it.
    click(&page, ".events .card button", None).await;
    wait_for(
        &page,
        "the video playing",
        "const v = document.querySelector('video'); \
        if (v && v.paused && v.readyState >= 2) v.play(); return v && v.currentTime > 0.5 && !v.paused;",
    )
    .await;
    let chunk = eval(&page, "return decodeURIComponent(location.hash.split('/')[2].split('?')[0]);").await;
    let chunk = chunk.as_str().unwrap().to_string();

    // Seek to the biggest detection in the clip: its box is drawn where the worker found it.
    let detections = osprey_testkit::vault_get(&base, &format!("/api/v1/recordings/{chunk}/detections"), A).await;
    let (track, pts, rect) = biggest_box(&detections);
    assert!(seek(&page, pts).await >= 1, "no box drawn at {pts} ms");
    let geometry = eval(
        &page,
        "const v = document.querySelector('video'); const r = v.getBoundingClientRect(); \
        return [r.left, r.top, r.width, r.height, v.videoWidth, v.videoHeight];",
    )
    .await;
    let g: Vec<f64> = geometry.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let (rw, rh) =
        (detections["results"][0]["width"].as_f64().unwrap(), detections["results"][0]["height"].as_f64().unwrap());
    let fit = (g[2] / g[4]).min(g[3] / g[5]);
    let (ox, oy) = (g[0] + (g[2] - g[4] * fit) / 2.0, g[1] + (g[3] - g[5] * fit) / 2.0);
    let (sx, sy) = (g[4] / rw * fit, g[5] / rh * fit);
    let on_page = [ox + rect[0] * sx, oy + rect[1] * sy, ox + rect[2] * sx, oy + rect[3] * sy];
    let with = screenshot(&page, "05-player-boxes").await;
    eval(
        &page,
        "document.querySelector('canvas').style.visibility = 'hidden'; \
        await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))); return true;",
    )
    .await;
    let without = screenshot(&page, "06-player-no-boxes").await;
    eval(&page, "document.querySelector('canvas').style.visibility = ''; return true;").await;
    let (with, width) = pixels(&with);
    let (without, _) = pixels(&without);
    let label = track["label"].as_str().unwrap();
    let hits = edge_hits(&with, &without, width, on_page, label_rgb(label));
    assert!(
        hits >= 0.8,
        "{label} box {rect:?} at {pts} ms (page {on_page:?}): only {:.0}% of its edge drawn",
        hits * 100.0
    );
    // A time with nothing to draw: nothing drawn.
    let first = detections["results"][0]["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["boxes"][0]["pts_ms"].as_u64())
        .min()
        .unwrap();
    if first > 0 {
        assert_eq!(seek(&page, first.saturating_sub(600).min(first - 1)).await, 0);
    }

    // A track in the list jumps to it.
    let listed = eval(&page, "return document.querySelectorAll('.tracks button').length;").await;
    assert_eq!(listed.as_u64().unwrap() as usize, detections["results"][0]["tracks"].as_array().unwrap().len());
    click(&page, ".tracks button", None).await;
    wait_for(
        &page,
        "the first track's time",
        "return !document.querySelector('video').seeking \
        && Number(document.querySelector('canvas').dataset.boxes) >= 1;",
    )
    .await;

    // The uploaded Kerberos-style fragmented MP4 plays too (the agent's chunks are progressive).
    let recordings = osprey_testkit::vault_get(&base, &format!("/api/v1/recordings?device={device}&limit=1"), A).await;
    let newest = recordings["recordings"][0]["chunk_id"].as_str().unwrap().to_string();
    go(&page, &base, &format!("#/play/{newest}")).await;
    wait_for(
        &page,
        "the fragmented recording playing",
        "const v = document.querySelector('video'); \
        if (v && v.paused && v.readyState >= 2) v.play(); return v && v.currentTime > 0.5;",
    )
    .await;
    // Page after page in one tab, each a new document (the ones left behind may stay alive in the
    // back-forward cache): the next one still gets its data. While every page kept its live
    // stream open, the sixth used up the browser's six connections to the vault and this hung.
    for n in 0..8 {
        page.goto("about:blank").await.unwrap();
        page.goto(format!("{base}/#/timeline/{device}")).await.unwrap();
        wait_for(
            &page,
            &format!("the timeline, load {n}"),
            "return document.querySelector('.strip')?.dataset.recordings === '9';",
        )
        .await;
    }

    // The system page: the account's storage, its model's results, nothing left waiting.
    go(&page, &base, "#/system").await;
    let rows = wait_for(
        &page,
        "the system page's storage and model",
        "const rows = [...document.querySelectorAll('tbody tr')] \
        .map((r) => r.innerText.replace(/\\s+/g, ' ')); \
        return rows.some((r) => r.startsWith('local 9 ')) && rows.some((r) => r.startsWith('nanodet')) && rows;",
    )
    .await;
    let waiting = wait_for(
        &page,
        "nothing waiting for a worker",
        "const d = [...document.querySelectorAll('.facts dd')]; \
        return d.length > 2 && d[2].textContent === '0' && d[1].textContent;",
    )
    .await;
    assert_eq!(waiting, "0", "{rows}");
    screenshot(&page, "07-system").await;
    problems.assert_none("account A");

    // Account B sees no camera, and not A's recording when it asks by id.
    sign_out(&page).await;
    sign_in_by_keyboard(&page, B).await;
    go(&page, &base, "#/").await;
    let none = wait_for(
        &page,
        "B's empty camera list",
        "const s = document.querySelector('main section'); \
        return s && !document.querySelector('.cameras .card') && s.textContent.includes('No camera');",
    )
    .await;
    assert!(none.as_bool().unwrap());
    go(&page, &base, &format!("#/play/{chunk}")).await;
    let refused =
        wait_for(&page, "B refused A's recording", "return document.querySelector('[role=alert]')?.textContent;").await;
    assert!(refused.as_str().unwrap().contains("no recording"), "{refused}");
    assert_eq!(eval(&page, "return document.querySelectorAll('video').length;").await, 0);
    screenshot(&page, "08-account-b").await;
    let provoked = problems.take_matching(&chunk);
    assert!(provoked.iter().all(|p| !p.contains("answer") || p.contains("answer 404")), "{provoked:?}");
    problems.assert_none("account B");

    // On a phone-sized screen, as account A again: the events grid fits the width, no sideways scroll.
    use chromiumoxide::cdp::browser_protocol::emulation::SetDeviceMetricsOverrideParams;
    sign_out(&page).await;
    sign_in(&page, A).await;
    page.execute(SetDeviceMetricsOverrideParams::new(390, 844, 2.0, true)).await.unwrap();
    go(&page, &base, "#/events?label=person").await;
    let fits = wait_for(
        &page,
        "the events on a phone",
        "const cards = document.querySelectorAll('.events .card'); \
        return cards.length > 0 && [document.documentElement.scrollWidth, innerWidth];",
    )
    .await;
    assert_eq!(fits[0], fits[1], "the page is wider than the phone's screen: {fits}");
    screenshot(&page, "09-phone-events").await;
    problems.assert_none("phone");

    browser.close().await.unwrap();
    browser.wait().await.unwrap();
    events.abort();
    up.stop();
}
