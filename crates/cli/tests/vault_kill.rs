//! A vault killed with `kill -9` during 20 concurrent uploads, restarted on the same data, with
//! its clients retrying as agents do: every chunk acknowledged before the kill is intact, every
//! chunk ends with exactly one row and one event, nothing is left over, the dead vault's claims
//! block no upload for more than a few seconds, and `osprey vault check` finds no problem.

use osprey_cli::Config;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LEASE_SECS: u64 = 2;

fn osprey(config: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_osprey"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("OSPREY_")) {
        c.env_remove(k);
    }
    c.arg("--config").arg(config);
    c
}

fn start(config: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    osprey(config).arg("vault").stdout(Stdio::null()).stderr(log).spawn().unwrap()
}

async fn wait_healthy(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{base}/healthz")).await.is_err() {
        assert!(Instant::now() < deadline, "vault did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the clients saw: chunks acknowledged (key -> sha256, and when), and 503 answers.
#[derive(Default)]
struct Seen {
    acked: BTreeMap<String, (String, Instant)>,
    busy: Vec<Instant>,
}

async fn client(base: String, id: usize, seen: Arc<Mutex<Seen>>) {
    let http = reqwest::Client::new();
    // Some chunks above the 8 MiB multipart threshold, so a kill can leave part files.
    let sizes = if id.is_multiple_of(4) { vec![10 << 20, 1 << 20] } else { vec![1 << 20, 3 << 20, 512 << 10] };
    for (n, size) in sizes.into_iter().enumerate() {
        let name = format!("{}_6-967003_cam{id}_0-0-0-0_0_{n}.mp4", 1_700_000_000 + id * 10 + n);
        let body = osprey_testkit::mp4_like_bytes(size, (id * 7 + n) as u8);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            assert!(Instant::now() < deadline, "{name} was never stored");
            let resp = http
                .post(format!("{base}/storage"))
                .header("Content-Type", "video/mp4")
                .header("X-Kerberos-Storage-AccessKey", "cams-access")
                .header("X-Kerberos-Storage-SecretAccessKey", "cams-secret-1")
                .header("X-Kerberos-Storage-Provider", "local")
                .header("X-Kerberos-Storage-FileName", &name)
                .header("X-Kerberos-Storage-Device", format!("cam{id}"))
                .body(body.clone())
                .send()
                .await;
            match resp.map(|r| r.status().as_u16()) {
                Ok(200) => {
                    let sha = hex::encode(Sha256::digest(&body));
                    seen.lock().unwrap().acked.insert(format!("cams/{name}"), (sha, Instant::now()));
                    break;
                }
                Ok(503) => seen.lock().unwrap().busy.push(Instant::now()),
                Ok(other) => panic!("{name}: {other}"),
                Err(_) => {} // the vault is down: retry
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_uploads_loses_nothing_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = osprey_testkit::free_port();
    let file = dir.path().join("osprey.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = {:?}\n[vault]\nlisten = \"127.0.0.1:{port}\"\nclaim_lease_secs = {LEASE_SECS}\n\
             [[vault.accounts]]\nname = \"cams\"\naccess_key = \"cams-access\"\nsecret_key = \"cams-secret-1\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let log = dir.path().join("vault.log");
    let base = format!("http://127.0.0.1:{port}");
    let mut vault = start(&file, &log);
    wait_healthy(&base).await;

    let seen: Arc<Mutex<Seen>> = Arc::default();
    let clients: Vec<_> = (0..20).map(|id| tokio::spawn(client(base.clone(), id, seen.clone()))).collect();
    // Kill once some chunks are acknowledged and others are in flight.
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().acked.len() < 8 {
        assert!(Instant::now() < deadline, "no uploads got through");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Command::new("kill").args(["-9", &vault.id().to_string()]).status().unwrap();
    vault.wait().unwrap();
    let killed_at = Instant::now();
    let before_kill: BTreeMap<String, String> =
        seen.lock().unwrap().acked.iter().map(|(k, (s, _))| (k.clone(), s.clone())).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    vault = start(&file, &log);
    wait_healthy(&base).await;
    let restarted_at = Instant::now();
    for c in clients {
        c.await.unwrap();
    }
    // The reconciliation's periodic pass releases dead claims every lease.
    tokio::time::sleep(Duration::from_secs(LEASE_SECS * 2 + 1)).await;
    Command::new("kill").args(["-TERM", &vault.id().to_string()]).status().unwrap();
    vault.wait().unwrap();

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(!before_kill.is_empty() && before_kill.len() < 20 * 3, "the kill came during the uploads");
    let late: Vec<_> = seen.busy.iter().filter(|t| **t > restarted_at + Duration::from_secs(LEASE_SECS + 3)).collect();
    assert!(
        late.is_empty(),
        "{} uploads refused with 503 more than {} s after the restart",
        late.len(),
        LEASE_SECS + 3
    );
    eprintln!(
        "acknowledged before the kill: {}, after: {}, 503 answers: {}, restart took {:?}",
        before_kill.len(),
        seen.acked.len() - before_kill.len(),
        seen.busy.len(),
        restarted_at - killed_at
    );

    let config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    let runtime_db = osprey_vault::db::Db::open(&config.vault_setup().database_url()).await.unwrap();
    let rows = runtime_db.all_recordings().await.unwrap();
    assert_eq!(rows.len(), 20 * 3 - 5, "one row per chunk");
    let storage = dir.path().join("storage/local");
    for r in &rows {
        let (sha, _) =
            seen.acked.get(r.object_key.as_str()).unwrap_or_else(|| panic!("{} not acknowledged", r.object_key));
        assert_eq!(&r.sha256, sha);
        let bytes = std::fs::read(storage.join(r.object_key.as_str()))
            .unwrap_or_else(|_| panic!("{}: object lost", r.object_key));
        assert_eq!(&hex::encode(Sha256::digest(&bytes)), sha, "{}: object damaged", r.object_key);
        assert_eq!(runtime_db.event_count(r.chunk_id.as_str()).await.unwrap(), 1, "{}: one event", r.object_key);
    }
    for key in before_kill.keys() {
        assert!(rows.iter().any(|r| r.object_key.as_str() == key), "{key}, acknowledged before the kill, is gone");
    }
    let files = osprey_testkit::files_under(&storage);
    assert_eq!(files.len(), rows.len(), "orphans or leftovers: {files:?}");
    let tus: Vec<_> = std::fs::read_dir(dir.path().join("tus")).into_iter().flatten().flatten().collect();
    assert!(tus.is_empty(), "tus leftovers");

    let out = osprey(&file).args(["vault", "check"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "vault check failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("vault check: 0 problems"), "{text}");
}
