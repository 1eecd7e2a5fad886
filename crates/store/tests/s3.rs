//! The S3 provider against a real S3-compatible server (s3s-fs, which checks SigV4 signatures)
//! on 127.0.0.1: the same conformance suite as local disk and memory, a 50 MB chunk through
//! multipart upload, and pre-signed download links.

use bytes::Bytes;
use osprey_core::ObjectKey;
use osprey_store::Provider;
use osprey_testkit::S3Server;
use sha2::{Digest, Sha256};
use std::time::Duration;

fn provider(server: &S3Server) -> Provider {
    osprey_store::cloud_provider("s3", &server.provider_config()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_provider_conforms() {
    let Some(server) = S3Server::start() else { return };
    osprey_store::conformance::run(&provider(&server)).await;
    // Nothing but committed objects remains: no staging objects or multipart leftovers.
    let left: Vec<String> = server.files().into_iter().filter(|f| f.contains("_staging")).collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_50_mb_chunk_goes_up_in_parts_and_comes_back_through_a_presigned_link() {
    let Some(server) = S3Server::start() else { return };
    let provider = provider(&server);
    let data: Vec<u8> = (0..50 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let key = ObjectKey::parse("cams/big_chunk.mp4").unwrap();
    let pieces: Vec<Result<Bytes, std::io::Error>> =
        data.chunks(1 << 20).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let stored = provider.put(&key, futures::stream::iter(pieces), 64 * 1024 * 1024).await.unwrap();
    assert_eq!(stored.size, data.len() as u64);
    assert_eq!(stored.sha256, hex::encode(Sha256::digest(&data)));

    let url = provider.signed_url(&key, Duration::from_secs(300)).await.unwrap().expect("S3 signs links");
    assert!(url.starts_with(&server.endpoint()) && url.contains("X-Amz-Signature="), "{url}");
    let body = reqwest::get(&url).await.unwrap().error_for_status().unwrap().bytes().await.unwrap();
    assert_eq!(hex::encode(Sha256::digest(&body)), stored.sha256, "the link serves the same bytes");
    let tampered = url.replace("big_chunk", "other_chunk");
    assert_eq!(reqwest::get(&tampered).await.unwrap().status(), 403, "a changed link is refused");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_are_an_unavailable_store_not_a_panic() {
    let Some(server) = S3Server::start() else { return };
    let mut config = server.provider_config();
    config.secret_access_key = Some("wrong".into());
    let provider = osprey_store::cloud_provider("s3", &config).unwrap();
    let key = ObjectKey::parse("cams/x.mp4").unwrap();
    let err = provider
        .put(&key, futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"abc"))]), 10)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), osprey_core::ErrorKind::Unavailable, "{err}");
}
