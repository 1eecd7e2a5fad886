//! The agent's uploader speaks tus to the vault: a connection cut mid-chunk costs only the bytes
//! in flight; the upload resumes from the vault's offset and the chunk arrives once, intact.

use osprey_agent::{Client, Upload, VaultTarget};
use osprey_bus::EmbeddedBus;
use osprey_core::SystemClock;
use osprey_testkit::{mp4_like_bytes, vault_get};
use osprey_vault::{AccountConfig, Setup};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Forwards connections to `to`; the first time more than `cut_after` request bytes have passed
/// in total, that connection is dropped.
async fn flaky_proxy(to: SocketAddr, cut_after: usize) -> (SocketAddr, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let cut = Arc::new(AtomicBool::new(false));
    let cut_flag = cut.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else { return };
            let (sent, cut) = (sent.clone(), cut.clone());
            tokio::spawn(async move {
                let server = TcpStream::connect(to).await.unwrap();
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let total = sent.fetch_add(n, Ordering::SeqCst) + n;
                        if total > cut_after && !cut.swap(true, Ordering::SeqCst) {
                            return; // drop both directions mid-request
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                let down = tokio::io::copy(&mut sr, &mut cw);
                tokio::select! {
                    _ = up => {}
                    _ = down => {}
                }
            });
        }
    });
    (addr, cut_flag)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_cut_mid_chunk_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Setup::new(dir.path());
    config.vault.listen = "127.0.0.1:0".parse().unwrap();
    config.vault.fsync = false;
    config.vault.max_upload_bytes = 64 << 20;
    config.vault.accounts = vec![AccountConfig::new("cams", "k", "secret-1")];
    let bus = Arc::new(EmbeddedBus::in_memory().await.unwrap());
    let providers = config.providers().unwrap();
    let vault = osprey_vault::Vault::start(config, bus, providers, Arc::new(SystemClock)).await.unwrap();
    // 10 MB goes in three 4 MB pieces; the cut falls inside the second.
    let (proxy, cut) = flaky_proxy(vault.addr, 6 << 20).await;
    let uploader = Client::new(
        VaultTarget {
            url: format!("http://{proxy}"),
            access_key: "k".into(),
            secret_key: "secret-1".into(),
            provider: "local".into(),
            directory: "cams".into(),
        },
        osprey_core::Backoff::once(),
    );
    let body = mp4_like_bytes(10 << 20, 4);
    let answer = uploader
        .upload(&Upload::named("porch", "1700000000_6-967003_porch_0-0-0-0_0_1.mp4", body.clone()))
        .await
        .unwrap();
    assert!(cut.load(Ordering::SeqCst), "the proxy cut a connection");
    let chunk_id = &answer.chunk_id;
    assert!(!answer.duplicate);

    let http = reqwest::Client::new();
    let base = format!("http://{}", vault.addr);
    let link = vault_get(&base, &format!("/api/v1/recordings/{chunk_id}/url"), ("k", "secret-1")).await;
    let stored = http.get(link["url"].as_str().unwrap()).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(Sha256::digest(&stored), Sha256::digest(&body), "byte-identical after the resume");
    let list = vault_get(&base, "/api/v1/recordings", ("k", "secret-1")).await;
    assert_eq!(list["recordings"].as_array().unwrap().len(), 1, "stored once");
    let metrics = http.get(format!("http://{}/metrics", vault.addr)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("osprey_vault_tus_uploads_completed_total"), "it went through tus");
    vault.stop().await.unwrap();
}

/// An HTTP proxy that sends each request to the next of `backends` in turn, as a Service without
/// session affinity does with vault replicas.
async fn round_robin(listener: TcpListener, backends: Vec<SocketAddr>) {
    let next = Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let backend = backends[next.fetch_add(1, Ordering::SeqCst) % backends.len()];
        let http = http.clone();
        async move {
            let (parts, body) = request.into_parts();
            let url = format!("http://{backend}{}", parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let mut headers = parts.headers.clone();
            headers.remove(axum::http::header::HOST);
            let answer = http.request(parts.method, url).headers(headers).body(body).send().await.unwrap();
            let mut response = axum::response::Response::builder().status(answer.status());
            for (name, value) in answer.headers() {
                response = response.header(name, value);
            }
            response.body(axum::body::Body::from(answer.bytes().await.unwrap())).unwrap()
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
}

/// Two vault replicas share a database and a store but not their partial tus uploads. When a
/// PATCH reaches the replica that did not create the upload, the agent sends the chunk whole
/// instead, and every chunk is stored once, intact.
#[tokio::test(flavor = "multi_thread")]
async fn a_resumable_upload_that_lands_on_another_replica_is_sent_whole() {
    let shared = tempfile::tempdir().unwrap();
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let bus = Arc::new(EmbeddedBus::in_memory().await.unwrap());
    let mut replicas = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Setup::new(dir.path());
        config.vault.listen = "127.0.0.1:0".parse().unwrap();
        config.vault.public_url = Some(format!("http://{proxy_addr}"));
        config.vault.fsync = false;
        config.vault.max_upload_bytes = 64 << 20;
        config.vault.database_url = Some(format!("sqlite://{}", shared.path().join("osprey.db").display()));
        config.providers.insert(
            "local".into(),
            osprey_store::ProviderConfig { path: Some(shared.path().join("storage")), ..Default::default() },
        );
        config.vault.accounts = vec![AccountConfig::new("cams", "k", "secret-1")];
        let providers = config.providers().unwrap();
        replicas.push(osprey_vault::Vault::start(config, bus.clone(), providers, Arc::new(SystemClock)).await.unwrap());
        dirs.push(dir);
    }
    round_robin(proxy, replicas.iter().map(|v| v.addr).collect()).await;
    let target = VaultTarget {
        url: format!("http://{proxy_addr}"),
        access_key: "k".into(),
        secret_key: "secret-1".into(),
        provider: "local".into(),
        directory: "cams".into(),
    };
    let uploader = Client::new(target, osprey_core::Backoff::once());
    let bodies: Vec<Vec<u8>> =
        [10 << 20, 1 << 20, 6 << 20].into_iter().enumerate().map(|(i, len)| mp4_like_bytes(len, i as u8)).collect();
    for (i, body) in bodies.iter().enumerate() {
        let name = format!("1700000000_6-967003_porch_0-0-0-0_0_{i}.mp4");
        let answer = uploader
            .upload(&Upload::named("porch", &name, body.clone()))
            .await
            .unwrap_or_else(|e| panic!("chunk {i}: {e}"));
        assert!(!answer.duplicate, "{answer:?}");
    }

    let base = format!("http://{}", replicas[0].addr);
    let list = vault_get(&base, "/api/v1/recordings", ("k", "secret-1")).await;
    assert_eq!(list["recordings"].as_array().unwrap().len(), 3, "each chunk stored once: {list}");
    for (i, body) in bodies.iter().enumerate() {
        let row = list["recordings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["object_key"].as_str().unwrap().ends_with(&format!("_{i}.mp4")))
            .unwrap();
        let stored = std::fs::read(shared.path().join("storage").join(row["object_key"].as_str().unwrap())).unwrap();
        assert_eq!(Sha256::digest(&stored), Sha256::digest(body), "chunk {i} intact");
    }
    for replica in replicas {
        replica.stop().await.unwrap();
    }
}
