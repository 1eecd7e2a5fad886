//! Retention over a running vault: exactly the recordings its rules expire are deleted, objects
//! and rows together; a dry run deletes nothing; a deletion cut short is finished next run.

use osprey_bus::{Bus, EmbeddedBus};
use osprey_core::{Clock, ManualClock};
use osprey_store::ProviderConfig;
use osprey_testkit::mp4_like_bytes;
use osprey_vault::{AccountConfig, RetentionRule, Setup};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

const DAY: i64 = 86_400;

fn account(name: &str) -> AccountConfig {
    AccountConfig {
        name: name.into(),
        access_key: format!("{name}-key"),
        secret_key: format!("{name}-secret").into(),
        providers: vec![],
        main_provider: None,
    }
}

struct Fixture {
    config: Setup,
    vault: osprey_vault::Vault,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// Uploads a 10 KB chunk recorded `age_days` ago; returns its chunk id.
    async fn upload(&self, who: &str, provider: &str, age_days: i64, n: u8) -> String {
        let recorded = self.clock.unix_secs() - age_days * DAY;
        let resp = reqwest::Client::new()
            .post(format!("http://{}/storage", self.vault.addr))
            .header("Content-Type", "video/mp4")
            .header("X-Kerberos-Storage-AccessKey", format!("{who}-key"))
            .header("X-Kerberos-Storage-SecretAccessKey", format!("{who}-secret"))
            .header("X-Kerberos-Storage-Provider", provider)
            .header("X-Kerberos-Storage-FileName", format!("{recorded}_6-967003_cam_0-0-0-0_0_{n}.mp4"))
            .header("X-Kerberos-Storage-Directory", who)
            .body(mp4_like_bytes(10_000, n))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json::<serde_json::Value>().await.unwrap()["chunk_id"].as_str().unwrap().to_string()
    }

    async fn visible(&self, who: &str, id: &str) -> bool {
        let resp = reqwest::Client::new()
            .get(format!("http://{}/api/v1/recordings/{id}", self.vault.addr))
            .basic_auth(format!("{who}-key"), Some(format!("{who}-secret")))
            .send()
            .await
            .unwrap();
        resp.status() == 200
    }

    fn objects(&self) -> usize {
        let mut n = 0;
        let mut stack = vec![self.config.data_dir.join("storage")];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else if !e.path().to_string_lossy().contains("_staging") {
                    n += 1;
                }
            }
        }
        n
    }
}

async fn setup() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Setup::new(dir.path());
    config.vault.listen = "127.0.0.1:0".parse().unwrap();
    config.vault.fsync = false;
    config.providers.insert("archive".into(), ProviderConfig::default());
    config.vault.accounts = vec![account("alice"), account("bob")];
    config.vault.retention = vec![
        RetentionRule { account: Some("alice".into()), max_age_days: Some(7.0), ..Default::default() },
        RetentionRule { provider: Some("archive".into()), max_bytes: Some(25_000), ..Default::default() },
    ];
    config.validate().unwrap();
    let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000)));
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::in_memory().await.unwrap());
    let providers = config.providers().unwrap();
    let vault = osprey_vault::Vault::start(config.clone(), bus, providers, clock.clone()).await.unwrap();
    Fixture { config, vault, clock, _dir: dir }
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_removes_exactly_the_expired_chunks() {
    let s = setup().await;
    let alice_old = [s.upload("alice", "local", 10, 1).await, s.upload("alice", "local", 8, 2).await];
    let alice_new = [s.upload("alice", "local", 6, 3).await, s.upload("alice", "local", 1, 4).await];
    let bob_local = s.upload("bob", "local", 30, 5).await; // no rule covers it
    let mut archive = Vec::new();
    for (age, n) in [(5, 6), (4, 7), (3, 8), (2, 9)] {
        archive.push(s.upload("bob", "archive", age, n).await);
    }
    assert_eq!(s.objects(), 9);

    let dry = osprey_vault::retention::run_from_config(&s.config, &*s.clock, true).await.unwrap();
    let mut expected: Vec<&String> = alice_old.iter().chain(&archive[..2]).collect();
    expected.sort();
    let mut planned: Vec<&str> = dry.expired.iter().map(|e| e.chunk_id.as_str()).collect();
    planned.sort();
    assert_eq!(planned, expected, "age rule: alice's two over 7 days; size rule: archive's two oldest (40 KB > 25 KB)");
    assert_eq!((dry.deleted, s.objects()), (0, 9), "a dry run deletes nothing");

    let run = osprey_vault::retention::run_from_config(&s.config, &*s.clock, false).await.unwrap();
    let chunk = mp4_like_bytes(10_000, 0).len() as u64;
    assert_eq!((run.deleted, run.deleted_bytes, run.failed), (4, 4 * chunk, 0));
    assert_eq!(s.objects(), 5, "their objects are gone");
    for id in alice_old.iter() {
        assert!(!s.visible("alice", id).await);
    }
    for id in &archive[..2] {
        assert!(!s.visible("bob", id).await);
    }
    for id in &alice_new {
        assert!(s.visible("alice", id).await, "alice's newer chunks stay");
    }
    assert!(s.visible("bob", &bob_local).await, "no rule covers bob's local chunks");
    for id in &archive[2..] {
        assert!(s.visible("bob", id).await, "the archive's newest 20 KB stay");
    }
    let again = osprey_vault::retention::run_from_config(&s.config, &*s.clock, false).await.unwrap();
    assert_eq!((again.expired.len(), again.deleted), (0, 0), "a second run finds nothing more");
    s.vault.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deletion_cut_short_is_finished_by_the_next_run() {
    let s = setup().await;
    let kept = s.upload("bob", "local", 1, 1).await;
    // A run that marked the recording and stopped before deleting anything.
    let db = osprey_vault::db::Db::open(&s.config.database_url()).await.unwrap();
    db.mark_deleting(&[kept.as_str()], osprey_core::Timestamp::default()).await.unwrap();
    assert!(!s.visible("bob", &kept).await, "a marked recording is gone to the API at once");
    assert_eq!(s.objects(), 1, "its object is still there");
    let run = osprey_vault::retention::run_from_config(&s.config, &*s.clock, false).await.unwrap();
    assert_eq!(run.deleted, 1);
    assert_eq!(s.objects(), 0);
    assert!(db.recording(&kept).await.unwrap().is_none(), "row and object both gone");
    s.vault.stop().await.unwrap();
}
