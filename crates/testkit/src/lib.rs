//! Real components for tests, started on 127.0.0.1 in a temporary directory and stopped on drop.
//!
//! A missing server binary skips the test with a message, unless the environment says it is
//! required (`.ci/run` sets `TEST_REQUIRE_TOOLS=1`), in which case the test fails. While
//! `scripts/test` is still building a server, the tests that need it wait for it (see
//! [`wait_while_building`]) and the others run.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for_port(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// `scripts/test` builds the test servers alongside the tests and runs the tests as soon as they
/// are built: `TEST_TOOLS_PENDING` names a directory holding a file per server still being
/// built, removed when it is installed, or saying `failed`. A test that needs one waits here.
fn wait_while_building(name: &str) {
    let Some(dir) = std::env::var_os("TEST_TOOLS_PENDING") else { return };
    let marker = PathBuf::from(dir).join(name);
    let deadline = Instant::now() + Duration::from_secs(45 * 60);
    let mut said = false;
    while let Ok(state) = std::fs::read_to_string(&marker) {
        if state.trim() == "failed" {
            panic!("{name} failed to build (scripts/test prints its log)");
        }
        if Instant::now() > deadline {
            panic!("{name} was still building after 45 minutes");
        }
        if !said {
            eprintln!("waiting for {name}, still being built by scripts/test");
            said = true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn find_binary(env: &str, name: &str) -> Option<PathBuf> {
    wait_while_building(name);
    if let Some(path) = std::env::var_os(env) {
        return Some(PathBuf::from(path));
    }
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// A Kafka-protocol broker (tansu) on a free port, storing to SQLite in a temporary directory so
/// that it keeps its topics and offsets across [`Broker::stop`] and [`Broker::restart`].
pub struct Broker {
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Broker {
    /// Starts a broker, or returns `None` (after saying so) when tansu is not installed and not
    /// required.
    pub fn start() -> Option<Broker> {
        let Some(binary) = find_binary("TANSU_BIN", "tansu") else {
            if std::env::var_os("TEST_REQUIRE_TOOLS").is_some() {
                panic!("tansu is required (TEST_REQUIRE_TOOLS is set) but not installed: run .ci/run or `cargo install tansu --version 0.6.0 --features libsql --locked`");
            }
            eprintln!("SKIPPED: tansu not installed; this test needs a Kafka-protocol broker");
            return None;
        };
        let mut broker = Broker { binary, port: free_port(), dir: tempfile::tempdir().unwrap(), child: None };
        broker.restart();
        Some(broker)
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What the broker printed so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        kill(&mut self.child);
    }

    /// Starts the broker (again) on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let mut command = Command::new(&self.binary);
        command
            .current_dir(self.dir.path())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"]);
        self.child = Some(spawn_listening(command, &self.dir.path().join("broker.log"), self.port, "broker"));
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// GET a vault API path (`/api/v1/...`) with an account's keys; the JSON answer.
pub async fn vault_get(base: &str, path: &str, (access, secret): (&str, &str)) -> serde_json::Value {
    let resp =
        reqwest::Client::new().get(format!("{base}{path}")).basic_auth(access, Some(secret)).send().await.unwrap();
    resp.json().await.unwrap()
}

/// Stops a child process and reaps it.
/// Starts a test server with its output appended to `log`, and waits until it listens on `port`.
fn spawn_listening(mut command: Command, log: &std::path::Path, port: u16, what: &str) -> Child {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", command.get_program().to_string_lossy()));
    if !wait_for_port(port, Duration::from_secs(20)) {
        child.kill().ok();
        panic!(
            "{what} did not listen on {port} within 20 s; its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    child
}

/// Every file below `root`, as sorted paths relative to it.
pub fn files_under(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        child.kill().ok();
        child.wait().ok();
    }
}

/// The repository's root directory.
/// The checkout: `OSPREY_REPO_ROOT` where the binary runs away from where it was built (a GPU
/// machine, see scripts/gpu-pack), else the directory it was built in.
pub fn repo_root() -> PathBuf {
    if let Some(root) = std::env::var_os("OSPREY_REPO_ROOT") {
        return PathBuf::from(root);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Says a tool is missing: fails under `TEST_REQUIRE_TOOLS`, else prints SKIPPED and returns None.
fn missing<T>(what: &str, how: &str) -> Option<T> {
    if std::env::var_os("TEST_REQUIRE_TOOLS").is_some() {
        panic!("{what} is required (TEST_REQUIRE_TOOLS is set) but missing: {how}");
    }
    eprintln!("SKIPPED: {what} missing ({how})");
    None
}

/// Python with the Helm engine (helm-python-sdk) and PyYAML: the `.venv-helm` that
/// `scripts/test` creates.
pub fn helm_python() -> Option<PathBuf> {
    let path = repo_root().join(".venv-helm/bin/python");
    if path.is_file() {
        return Some(path);
    }
    missing("the Helm Python environment", "run scripts/test, which creates .venv-helm")
}

/// Debian's Chromium (`$CHROMIUM`, else `chromium` on the PATH), for the web app's tests.
pub fn chromium() -> Option<PathBuf> {
    match find_binary("CHROMIUM", "chromium") {
        Some(path) => Some(path),
        None => missing("Chromium", "apt install chromium, as scripts/test does"),
    }
}

/// Headless Chromium with a fresh profile in `profile`, a 1280x900 window, UTC as its time zone,
/// and its DevTools events pumped in the background; `None` when Chromium is missing.
pub async fn launch_chromium(
    profile: &std::path::Path,
) -> Option<(chromiumoxide::Browser, tokio::task::JoinHandle<()>)> {
    use futures::StreamExt;
    let config = chromiumoxide::BrowserConfig::builder()
        .chrome_executable(chromium()?)
        .no_sandbox()
        .new_headless_mode()
        .user_data_dir(profile)
        .window_size(1280, 900)
        .viewport(None)
        .env("TZ", "UTC")
        .args(["--hide-scrollbars", "--mute-audio", "--autoplay-policy=no-user-gesture-required"])
        .launch_timeout(Duration::from_secs(60))
        .request_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let (browser, mut handler) = chromiumoxide::Browser::launch(config).await.expect("Chromium starts");
    // The handler must be polled for the browser to answer; an event it cannot parse is no reason
    // to stop.
    let events = tokio::spawn(async move { while handler.next().await.is_some() {} });
    Some((browser, events))
}

/// Python with onnxruntime, numpy and OpenCV, for reference runs: `$REFERENCE_PYTHON`, or the
/// `.venv-reference` that `scripts/test` creates.
pub fn reference_python() -> Option<PathBuf> {
    let path = std::env::var_os("REFERENCE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv-reference/bin/python"));
    if path.is_file() {
        return Some(path);
    }
    missing("the reference Python environment", "run scripts/test, which creates .venv-reference")
}

/// Photos of everyday COCO objects (dog, eagle, giraffe, horses, kite, person) from Debian's
/// `darknet` package, which `scripts/test` unpacks into `.cache/photos/` (nothing is installed).
pub fn photos() -> Option<Vec<PathBuf>> {
    let dir = repo_root().join(".cache/photos");
    let mut photos: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
                .collect()
        })
        .unwrap_or_default();
    photos.sort();
    if photos.len() >= 6 {
        return Some(photos);
    }
    missing("the test photos", "run scripts/test, which unpacks Debian's darknet photos into .cache/photos")
}

/// The real SSD-MobileNet-v2 COCO model directory that `scripts/convert-ssd` makes (and
/// `scripts/test` runs once) in `.cache/models/ssd-mobilenet-v2`.
pub fn ssd_model() -> Option<PathBuf> {
    let dir = repo_root().join(".cache/models/ssd-mobilenet-v2");
    if dir.join("model.toml").is_file() {
        return Some(dir);
    }
    missing("the SSD-MobileNet-v2 model", "run scripts/convert-ssd (scripts/test does)")
}

/// A photo as a one-frame H.264 MP4 (its sides made even), as a camera chunk would carry it.
pub fn photo_clip(photo: &std::path::Path, out: &std::path::Path) -> Vec<u8> {
    let scale = "scale=trunc(iw/2)*2:trunc(ih/2)*2";
    let args =
        ["-i", photo.to_str().unwrap(), "-frames:v", "1", "-vf", scale, "-c:v", "libx264", "-pix_fmt", "yuv420p"];
    ffmpeg(&args, out);
    std::fs::read(out).unwrap()
}

/// Runs the ffmpeg command-line tool (Debian's `ffmpeg`) with `args`, writing `output`.
pub fn ffmpeg(args: &[&str], output: &std::path::Path) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .arg(output)
        .status()
        .unwrap_or_else(|e| panic!("cannot run ffmpeg (apt-get install ffmpeg): {e}"));
    assert!(status.success(), "ffmpeg {args:?} failed");
}

/// A recording laid out as the Kerberos agent writes one (`machinery/src/video/mp4.go`):
/// fragmented, `ftyp moov(mvex) sidx free moof mdat ...`, video timescale 1000; `secs` seconds of
/// `from` from `start`, not re-encoded. ffmpeg writes no `free`: one is put after the `sidx`,
/// whose offset to the first fragment is moved on to match, as the agent's placeholder leaves it.
pub fn kerberos_fragmented(from: &std::path::Path, start: &str, secs: &str, out: &std::path::Path) {
    let flags = "empty_moov+default_base_moof+frag_keyframe+global_sidx";
    let input = from.to_str().unwrap();
    ffmpeg(
        &[
            "-ss",
            start,
            "-t",
            secs,
            "-i",
            input,
            "-an",
            "-c:v",
            "copy",
            "-video_track_timescale",
            "1000",
            "-movflags",
            flags,
        ],
        out,
    );
    let bytes = std::fs::read(out).unwrap();
    let boxes = top_level_boxes(&bytes);
    let (sidx_at, sidx_len) =
        *boxes.iter().find(|(at, _)| &bytes[at + 4..at + 8] == b"sidx").expect("ffmpeg wrote a sidx");
    const FREE: usize = 64;
    let mut sidx = bytes[sidx_at..sidx_at + sidx_len].to_vec();
    // Full box header, reference_ID, timescale, then earliest time and first_offset: 32 bits
    // each in version 0, 64 in version 1.
    let (at, width) = if sidx[8] == 0 { (20, 4) } else { (24, 8) };
    let mut offset = [0u8; 8];
    offset[8 - width..].copy_from_slice(&sidx[at + width..at + 2 * width]);
    let moved = (u64::from_be_bytes(offset) + FREE as u64).to_be_bytes();
    sidx[at + width..at + 2 * width].copy_from_slice(&moved[8 - width..]);
    let mut free = (FREE as u32).to_be_bytes().to_vec();
    free.extend_from_slice(b"free");
    free.resize(FREE, 0);
    let end = sidx_at + sidx_len;
    let patched = [&bytes[..sidx_at], &sidx[..], &free[..], &bytes[end..]].concat();
    std::fs::write(out, patched).unwrap();
}

/// The Kerberos agent's Verify file (`machinery/data/test-480p.mp4`) as it is laid out:
/// QuickTime (`ftyp qt`, `wide`, `mdat` before `moov`), an AAC track first and the H.264 video
/// second; 3 s of `from`, the video not re-encoded.
pub fn kerberos_verify_file(from: &std::path::Path, out: &std::path::Path) {
    let input = from.to_str().unwrap();
    ffmpeg(
        &[
            "-f", "lavfi", "-i", "sine=d=3", "-t", "3", "-i", input, "-map", "0:a", "-map", "1:v", "-c:a", "aac",
            "-c:v", "copy", "-f", "mov",
        ],
        out,
    );
}

/// `(offset, size)` of each top-level box.
pub fn top_level_boxes(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut boxes = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let size = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let size = if size == 0 { bytes.len() - at } else { size };
        boxes.push((at, size));
        at += size.max(8);
    }
    boxes
}

/// Bytes that are an MP4 file box by box (`ftyp`, an empty `moov`, then an `mdat` with `len` bytes of
/// pattern): what the vault accepts, for tests and benchmarks that do not decode.
pub fn mp4_like_bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut v = vec![0, 0, 0, 24];
    v.extend_from_slice(b"ftypisom\0\0\x02\0isomiso2");
    // An empty movie header box: structurally a complete MP4, though not a playable one.
    v.extend_from_slice(&[0, 0, 0, 8]);
    v.extend_from_slice(b"moov");
    v.extend_from_slice(&((len + 8) as u32).to_be_bytes());
    v.extend_from_slice(b"mdat");
    v.extend((0..len).map(|i| (i as u8).wrapping_mul(17).wrapping_add(seed)));
    v
}

/// A real RTSP camera: GStreamer's RTSP server (`scripts/rtsp-server.py`) on a free port,
/// serving an MP4 file once per connection at `/file` and a live test pattern at `/pattern`.
pub struct RtspServer {
    port: u16,
    file: Option<PathBuf>,
    child: Option<Child>,
    log: tempfile::NamedTempFile,
}

impl RtspServer {
    /// Starts the server, or returns `None` (after saying so) when GStreamer's RTSP server is not
    /// installed and not required.
    pub fn start(file: Option<&std::path::Path>) -> Option<RtspServer> {
        let python = PathBuf::from("/usr/bin/python3");
        let has_gi = Command::new(&python)
            .args([
                "-c",
                "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer",
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !has_gi {
            return missing(
                "GStreamer's RTSP server for Python",
                "run scripts/setup (apt: gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-*)",
            );
        }
        let mut server = RtspServer {
            port: free_port(),
            file: file.map(PathBuf::from),
            child: None,
            log: tempfile::NamedTempFile::new().unwrap(),
        };
        server.restart();
        Some(server)
    }

    /// `rtsp://127.0.0.1:PORT/PATH`.
    pub fn url(&self, path: &str) -> String {
        format!("rtsp://127.0.0.1:{}/{}", self.port, path.trim_start_matches('/'))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Kills the server, dropping every connection, as a camera that loses power.
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }

    /// Starts the server (again) on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let mut command = Command::new("/usr/bin/python3");
        command.arg(repo_root().join("scripts/rtsp-server.py")).args(["--port", &self.port.to_string()]);
        if let Some(file) = &self.file {
            command.arg("--file").arg(file);
        }
        let log = std::fs::OpenOptions::new().append(true).open(self.log.path()).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the RTSP server: {e}"));
        self.child = Some(child);
        if !wait_for_port(self.port, Duration::from_secs(20)) {
            panic!("RTSP server did not listen on {} within 20 s; its log:\n{}", self.port, self.log());
        }
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A real S3-compatible server (s3s-fs, which checks SigV4 signatures) on a free port, storing in
/// a temporary directory, with one bucket.
pub struct S3Server {
    port: u16,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    dir: tempfile::TempDir,
    binary: PathBuf,
    child: Option<Child>,
}

impl S3Server {
    /// Starts the server, or returns `None` (after saying so) when s3s-fs is not installed and
    /// not required.
    pub fn start() -> Option<S3Server> {
        let Some(binary) = find_binary("S3S_FS_BIN", "s3s-fs") else {
            return missing(
                "s3s-fs (an S3-compatible server)",
                "run scripts/test, or `cargo install s3s-fs --version 0.14.1 --features binary --locked`",
            );
        };
        let dir = tempfile::tempdir().unwrap();
        let bucket = "osprey-test".to_string();
        std::fs::create_dir_all(dir.path().join("data").join(&bucket)).unwrap();
        let mut server = S3Server {
            port: free_port(),
            bucket,
            access_key: "osprey-test-key".into(),
            secret_key: "osprey-test-secret".into(),
            dir,
            binary,
            child: None,
        };
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        let mut command = Command::new(&self.binary);
        command
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", &self.access_key, "--secret-key", &self.secret_key])
            .arg(self.dir.path().join("data"));
        self.child = Some(spawn_listening(command, &self.dir.path().join("s3.log"), self.port, "s3s-fs"));
    }

    /// Stops the server (kill), keeping its data.
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("s3.log")).unwrap_or_default()
    }

    /// Files the server holds for the bucket (leftovers of multipart uploads included), relative.
    pub fn files(&self) -> Vec<String> {
        files_under(&self.dir.path().join("data").join(&self.bucket))
    }

    /// A `[providers.NAME]` config for this server.
    pub fn provider_config(&self) -> osprey_store::ProviderConfig {
        osprey_store::ProviderConfig {
            kind: osprey_store::ProviderKind::S3,
            bucket: Some(self.bucket.clone()),
            endpoint: Some(self.endpoint()),
            access_key_id: Some(self.access_key.clone()),
            secret_access_key: Some(self.secret_key.as_str().into()),
            path_style: true,
            allow_http: true,
            ..Default::default()
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// A real PostgreSQL server (Debian's `postgresql` package) on a free port, in a temporary
/// directory, trusting local connections. As root it runs as the `postgres` user.
pub struct Postgres {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Postgres {
    /// Starts a server, or returns `None` (after saying so) when PostgreSQL is not installed and
    /// not required.
    pub fn start() -> Option<Postgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").is_file())
            .max();
        let Some(bin) = bin else {
            return missing("PostgreSQL", "run scripts/test, or apt-get install postgresql");
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let as_root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        if as_root {
            Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().unwrap();
        }
        // PostgreSQL refuses to run as root: drop to its own user (setpriv execs, no fork).
        let command = |program: &str| {
            let mut c = if as_root {
                let mut c = Command::new("setpriv");
                c.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]).arg(bin.join(program));
                c
            } else {
                Command::new(bin.join(program))
            };
            c.stdin(Stdio::null());
            c
        };
        let out =
            command("initdb").args(["-U", "osprey", "--auth=trust", "-E", "UTF8", "-D"]).arg(&data).output().unwrap();
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("postgres.log")).unwrap();
        if as_root {
            Command::new("chown").args(["postgres:postgres"]).arg(dir.path().join("postgres.log")).status().unwrap();
        }
        let child = command("postgres")
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .arg("-k")
            .arg(dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let server = Postgres { port, dir, child: Some(child) };
        if !wait_for_port(port, Duration::from_secs(30)) {
            panic!("postgres did not listen on {port} within 30 s; its log:\n{}", server.log());
        }
        Some(server)
    }

    /// A fresh database on this server, as a `postgres://` URL.
    pub fn database(&self, name: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new("psql")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "osprey", "-d", "postgres", "-c"])
                .arg(format!("CREATE DATABASE \"{name}\""))
                .output()
                .expect("psql (apt-get install postgresql-client)");
            if out.status.success() {
                return format!("postgres://osprey@127.0.0.1:{}/{name}", self.port);
            }
            // Up but not yet accepting connections.
            assert!(
                Instant::now() < deadline,
                "cannot create database {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Fast shutdown, so no server process outlives the test.
            Command::new("kill").args(["-INT", &child.id().to_string()]).status().ok();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            child.kill().ok();
            child.wait().ok();
        }
    }
}

/// A worker's result for `chunk_id` by `model` with `tracks` (10 s analysed at 2 fps, 1280x720),
/// as a worker publishes it on `osprey.detections`: for tests of what the vault does with results.
pub fn detection_result(chunk_id: &str, model: &str, tracks: Vec<osprey_core::Track>) -> osprey_core::DetectionResult {
    use osprey_core::{ChunkEvent, ChunkId, DetectionData, DetectionResult, EventMetadata, EventPayload};
    let mut counts = std::collections::BTreeMap::new();
    for t in &tracks {
        *counts.entry(t.label.clone()).or_insert(0) += 1;
    }
    let event = ChunkEvent {
        date: 1_700_000_000,
        events: vec!["monitor".into()],
        provider: "kstorage".into(),
        source: "local".into(),
        request: "persist".into(),
        chunk_id: ChunkId::parse(chunk_id).unwrap(),
        trace_id: String::new(),
        payload: EventPayload {
            key: "alice/x.mp4".into(),
            file_size: 2000,
            is_fragmented: false,
            bytes_ranges: String::new(),
            bytes_range_on_time: None,
            signed_url: String::new(),
            metadata: EventMetadata::default(),
        },
        reanalyse_job: None,
    };
    let frames = (0..10_000).step_by(500).map(|pts_ms| osprey_core::FrameDetections { pts_ms, detections: vec![] });
    let data = DetectionData {
        model: model.into(),
        model_version: "1".into(),
        model_sha256: "ab".repeat(32),
        width: 1280,
        height: 720,
        frames_analyzed: 20,
        object_count: counts.clone(),
        max_in_frame: counts,
        frames: frames.collect(),
        tracks,
    };
    DetectionResult { event, operation: "detection".into(), data }
}

/// The hostile MP4 files of `samples/hostile/` (each takes down a parser without bounds), as
/// (file name, bytes), in name order.
pub fn hostile_mp4s() -> Vec<(String, Vec<u8>)> {
    let dir = repo_root().join("samples/hostile");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "mp4"))
        .collect();
    files.sort();
    assert!(files.len() >= 9, "samples/hostile holds the regression corpus");
    files
        .into_iter()
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect()
}

/// Runs `work` on its own thread and returns its value, failing the test if it takes longer than
/// `deadline` (a hang) or panics.
pub fn within<T: Send + 'static>(
    what: &str,
    deadline: std::time::Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(work()).ok());
    match rx.recv_timeout(deadline) {
        Ok(value) => value,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("{what}: still running after {deadline:?} (a hang)"),
        Err(_) => panic!("{what}: panicked"),
    }
}

/// A global allocator for test binaries that refuses any one allocation above a cap, so a parser
/// that sizes a buffer from a declared size fails the test ("memory allocation of N bytes
/// failed") instead of exhausting the machine. `largest` reports the largest one granted.
pub struct CappedAlloc {
    cap: usize,
    largest: std::sync::atomic::AtomicUsize,
}

impl CappedAlloc {
    pub const fn new(cap: usize) -> Self {
        CappedAlloc { cap, largest: std::sync::atomic::AtomicUsize::new(0) }
    }

    pub fn largest(&self) -> usize {
        self.largest.load(std::sync::atomic::Ordering::Relaxed)
    }
}

// SAFETY: forwards to the system allocator; only refuses (null) requests above the cap.
unsafe impl std::alloc::GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.size() > self.cap {
            return std::ptr::null_mut();
        }
        self.largest.fetch_max(layout.size(), std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if new_size > self.cap {
            return std::ptr::null_mut();
        }
        self.largest.fetch_max(new_size, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

/// `bytes` with `flips` bytes flipped, at offsets below `span`, drawn from the xorshift `state`
/// (so a damaged-input test is the same on every run).
pub fn flip_bytes(bytes: &[u8], flips: usize, span: usize, state: &mut u64) -> Vec<u8> {
    let mut damaged = bytes.to_vec();
    for _ in 0..flips {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let at = (*state % span.min(damaged.len()) as u64) as usize;
        damaged[at] ^= (*state >> 32) as u8 | 1;
    }
    damaged
}
