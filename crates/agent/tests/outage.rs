//! The vault goes away while the agent records: chunks wait in the spool and all arrive, once
//! each, in order, when it is back. With the primary vault gone, the secondary takes them.

use osprey_agent::{run, AgentOptions, SourceSpec, VaultTarget};
use osprey_bus::EmbeddedBus;
use osprey_core::SystemClock;
use osprey_testkit::{ffmpeg, free_port, repo_root, vault_get};
use osprey_vault::Vault;
use osprey_vault::{AccountConfig, Setup};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn config(data: &Path, port: u16) -> Setup {
    let mut c = Setup::new(data);
    c.vault.listen = format!("127.0.0.1:{port}").parse().unwrap();
    c.vault.fsync = false;
    c.vault.accounts = vec![AccountConfig::new("agent", "a-key", "a-secret-1")];
    c
}

async fn start(config: &Setup, bus: &Arc<EmbeddedBus>) -> Vault {
    let providers = config.providers().unwrap();
    Vault::start(config.clone(), bus.clone(), providers, Arc::new(SystemClock)).await.unwrap()
}

fn target(port: u16) -> VaultTarget {
    VaultTarget {
        url: format!("http://127.0.0.1:{port}"),
        access_key: "a-key".into(),
        secret_key: "a-secret-1".into(),
        provider: "local".into(),
        directory: "agent".into(),
    }
}

async fn recordings(port: u16) -> Vec<serde_json::Value> {
    let list =
        vault_get(&format!("http://127.0.0.1:{port}"), "/api/v1/recordings?limit=1000", ("a-key", "a-secret-1")).await;
    list["recordings"].as_array().unwrap().clone()
}

fn clip(dir: &Path, secs: &str) -> std::path::PathBuf {
    let path = dir.join("clip.mp4");
    let sample = repo_root().join("samples/vtest.mp4");
    ffmpeg(&["-t", secs, "-i", sample.to_str().unwrap(), "-c", "copy"], &path);
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn a_30_second_vault_outage_loses_no_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let source = clip(dir.path(), "40");
    let expected = osprey_agent::cut(&std::fs::read(&source).unwrap(), 2.5).unwrap().len();
    let port = free_port();
    let config = config(&dir.path().join("vault"), port);
    let bus = Arc::new(EmbeddedBus::in_memory().await.unwrap());
    let vault = start(&config, &bus).await;

    let options = AgentOptions {
        chunk_secs: 2.5,
        ..AgentOptions::new(SourceSpec::File(source), "lobby", vec![target(port)], dir.path().join("spool"))
    };
    let started = Instant::now();
    let agent = tokio::spawn(run(options, CancellationToken::new()));

    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = recordings(port).await.len();
    vault.stop().await.unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let waiting =
        std::fs::read_dir(dir.path().join("spool")).unwrap().filter(|e| e.as_ref().unwrap().path().is_file()).count();
    assert!(waiting >= 10, "chunks recorded during the outage wait in the spool: {waiting}");
    let vault = start(&config, &bus).await;

    tokio::time::timeout(Duration::from_secs(60), agent).await.expect("agent finishes").unwrap().unwrap();
    let stored = recordings(port).await;
    eprintln!(
        "{expected} chunks in {:.0} s; {before} stored before the outage, {waiting} spooled during it",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(stored.len(), expected, "0 lost, none twice");
    let mut names: Vec<&str> = stored.iter().map(|r| r["object_key"].as_str().unwrap()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), expected);
    assert_eq!(std::fs::read_dir(dir.path().join("spool/rejected")).unwrap().count(), 0);
    vault.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_secondary_vault_takes_chunks_when_the_primary_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let source = clip(dir.path(), "12");
    let expected = osprey_agent::cut(&std::fs::read(&source).unwrap(), 2.5).unwrap().len();
    let (down, up) = (free_port(), free_port());
    let config = config(&dir.path().join("vault"), up);
    let bus = Arc::new(EmbeddedBus::in_memory().await.unwrap());
    let vault = start(&config, &bus).await;
    let options = AgentOptions {
        chunk_secs: 2.5,
        realtime: false,
        ..AgentOptions::new(SourceSpec::File(source), "gate", vec![target(down), target(up)], dir.path().join("spool"))
    };
    tokio::time::timeout(Duration::from_secs(60), run(options, CancellationToken::new())).await.unwrap().unwrap();
    assert_eq!(recordings(up).await.len(), expected);
    vault.stop().await.unwrap();
}
