//! A vault on 127.0.0.1 with two accounts and two local providers, in a temporary directory.
#![allow(dead_code)]

use osprey_bus::Bus;
use osprey_core::{Clock, ManualClock, SystemClock};
use osprey_store::ProviderConfig;
use osprey_vault::Vault;
use osprey_vault::{AccountConfig, Setup};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub const ALICE: (&str, &str) = ("alice-access", "alice-secret-123");
pub const BOB: (&str, &str) = ("bob-access", "bob-secret-4567");
pub const MAX_UPLOAD: u64 = 2 * 1024 * 1024;
pub const FILE_NAME: &str = "1700000000_6-967003_frontdoor_200-200-400-400_24_769.mp4";

pub struct TestVault {
    pub vault: Option<Vault>,
    pub dir: tempfile::TempDir,
    pub base: String,
    pub clock: Arc<ManualClock>,
    pub http: reqwest::Client,
    /// Changes made to the standard test config at every (re)start.
    pub tweak: fn(&mut Setup),
    /// The metadata database, when not the default SQLite file.
    pub database_url: Option<String>,
}

pub fn config(dir: &Path) -> Setup {
    let mut c = Setup::new(dir);
    c.vault.listen = "127.0.0.1:0".parse().unwrap();
    c.vault.max_upload_bytes = MAX_UPLOAD;
    c.vault.fsync = false;
    c.providers.insert("archive".into(), ProviderConfig::default());
    c.vault.accounts = vec![
        AccountConfig {
            name: "alice".into(),
            access_key: ALICE.0.into(),
            secret_key: ALICE.1.into(),
            providers: vec![],
            main_provider: None,
        },
        AccountConfig {
            name: "bob".into(),
            access_key: BOB.0.into(),
            secret_key: BOB.1.into(),
            providers: vec!["local".into()],
            main_provider: None,
        },
    ];
    c
}

impl TestVault {
    pub async fn start(bus: Arc<dyn Bus>) -> TestVault {
        TestVault::start_with(bus, |_| {}).await
    }

    pub async fn start_with(bus: Arc<dyn Bus>, tweak: fn(&mut Setup)) -> TestVault {
        TestVault::start_on(bus, tweak, None).await
    }

    /// On the database at `database_url` (SQLite in the data directory when `None`).
    pub async fn start_on(bus: Arc<dyn Bus>, tweak: fn(&mut Setup), database_url: Option<String>) -> TestVault {
        let filter = tracing_subscriber::EnvFilter::from_default_env();
        tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init().ok();
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let http = reqwest::Client::new();
        let mut t = TestVault { vault: None, dir, base: String::new(), clock, http, tweak, database_url };
        t.restart(bus).await;
        t
    }

    /// Starts a vault on the same data directory (stopping the running one first).
    pub async fn restart(&mut self, bus: Arc<dyn Bus>) {
        if let Some(v) = self.vault.take() {
            v.stop().await.unwrap();
        }
        let config = self.config();
        let providers = config.providers().unwrap();
        let clock: Arc<dyn Clock> = self.clock.clone();
        let vault = Vault::start(config, bus, providers, clock).await.unwrap();
        self.base = format!("http://{}", vault.addr);
        self.vault = Some(vault);
    }

    pub fn config(&self) -> Setup {
        let mut config = config(self.dir.path());
        config.vault.database_url.clone_from(&self.database_url);
        (self.tweak)(&mut config);
        config
    }

    /// The vault's metadata, opened beside it.
    pub async fn db(&self) -> osprey_vault::db::Db {
        osprey_vault::db::Db::open(&self.config().database_url()).await.unwrap()
    }

    /// `osprey vault check` on this vault: the problems it finds, as `kind what` lines.
    pub async fn check(&self) -> Vec<String> {
        let clock: Arc<dyn Clock> = self.clock.clone();
        let report = osprey_vault::reconcile::check_from_config(&self.config(), clock, false).await.unwrap();
        report.findings.iter().map(|f| format!("{} {}", f.kind.as_str(), f.what)).collect()
    }

    pub async fn stop(&mut self) {
        if let Some(v) = self.vault.take() {
            v.stop().await.unwrap();
        }
    }

    pub fn storage_root(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// A POST /storage with exactly the headers a Kerberos Agent sends.
    pub fn kerberos_upload(&self, creds: (&str, &str), file_name: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
        self.kerberos_upload_with(creds, file_name, body, &[])
    }

    /// The same, with some headers replaced (an empty value removes the header).
    pub fn kerberos_upload_with(
        &self,
        creds: (&str, &str),
        file_name: &str,
        body: Vec<u8>,
        overrides: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let mut headers = reqwest::header::HeaderMap::new();
        let standard = [
            ("Content-Type", "video/mp4"),
            ("X-Kerberos-Storage-CloudKey", "cloud-key"),
            ("X-Kerberos-Storage-AccessKey", creds.0),
            ("X-Kerberos-Storage-SecretAccessKey", creds.1),
            ("X-Kerberos-Storage-Provider", "local"),
            ("X-Kerberos-Storage-FileName", file_name),
            ("X-Kerberos-Storage-Device", "camera-device-1"),
            ("X-Kerberos-Storage-Capture", "IPCamera"),
            ("X-Kerberos-Storage-Directory", "alice"),
        ];
        for (name, value) in standard.iter().chain(overrides) {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap();
            match value.is_empty() {
                true => headers.remove(&name),
                false => headers.insert(name, reqwest::header::HeaderValue::from_str(value).unwrap()),
            };
        }
        self.http.post(format!("{}/storage", self.base)).headers(headers).body(body)
    }

    pub fn api(&self, creds: (&str, &str), path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.base)).basic_auth(creds.0, Some(creds.1))
    }

    /// Every file under the storage root, staging included.
    pub fn stored_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.storage_root(), &mut out);
        out
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

pub fn mp4_bytes(len: usize, seed: u8) -> Vec<u8> {
    osprey_testkit::mp4_like_bytes(len, seed)
}

pub fn file_name(i: usize) -> String {
    format!("{}_6-967003_frontdoor_200-200-400-400_24_{i}.mp4", 1_700_000_000 + i)
}

pub async fn json(resp: reqwest::Response) -> serde_json::Value {
    resp.json().await.unwrap()
}

pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

pub fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}
