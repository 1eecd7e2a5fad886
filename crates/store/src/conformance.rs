//! The behaviour every storage provider must show. Each backend's tests call [`run`].

use crate::Provider;
use bytes::Bytes;
use futures::{stream, StreamExt, TryStreamExt};
use osprey_core::{ErrorKind, ObjectKey};
use sha2::{Digest, Sha256};

type Piece = Result<Bytes, std::io::Error>;

/// Runs the whole suite against a provider, panicking on the first failure. Keys are made
/// unique per run so a shared backend can run it repeatedly.
pub async fn run(provider: &Provider) {
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let dir = format!("conformance-{run_id}");
    round_trip_small(provider, &dir).await;
    direct_put(provider, &dir).await;
    round_trip_multipart(provider, &dir).await;
    commit_never_overwrites(provider, &dir).await;
    oversize_leaves_nothing(provider, &dir).await;
    broken_body_leaves_nothing(provider, &dir).await;
    delete_is_idempotent(provider, &dir).await;
    concurrent_uploads_all_commit(provider, &dir).await;
    let staged = provider.staged().await.unwrap();
    assert!(staged.is_empty(), "staging left behind: {staged:?}");
}

fn pieces(data: &[u8], piece_len: usize) -> impl futures::Stream<Item = Piece> + Send + 'static {
    let chunks: Vec<Piece> = data.chunks(piece_len).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    stream::iter(chunks)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

async fn stored_keys(provider: &Provider, dir: &str) -> Vec<String> {
    provider.list(Some(dir)).await.unwrap().into_iter().map(|(k, _)| k).collect()
}

async fn round_trip_small(provider: &Provider, dir: &str) {
    let data = pattern(100_000, 1);
    let staged = provider.upload(pieces(&data, 7_000), 1 << 20).await.unwrap();
    assert_eq!(staged.size, data.len() as u64);
    assert_eq!(staged.sha256, hex::encode(Sha256::digest(&data)));
    let key = ObjectKey::new(dir, "small.mp4").unwrap();
    provider.commit(&staged, &key).await.unwrap();
    assert_eq!(provider.get_bytes(&key).await.unwrap().as_ref(), &data[..]);
    assert_eq!(provider.size(&key).await.unwrap(), Some(data.len() as u64));
    let (size, body) = provider.get(&key).await.unwrap();
    assert_eq!(size, data.len() as u64);
    let streamed: Vec<Bytes> = body.try_collect().await.unwrap();
    assert_eq!(streamed.concat(), data);
    assert_eq!(stored_keys(provider, dir).await, vec![key.to_string()]);
}

async fn round_trip_multipart(provider: &Provider, dir: &str) {
    // Larger than the write buffer, so the upload goes through the multipart path.
    let data = pattern(20 * 1024 * 1024 + 12_345, 2);
    let staged = provider.upload(pieces(&data, 256 * 1024), 64 << 20).await.unwrap();
    assert_eq!(staged.sha256, hex::encode(Sha256::digest(&data)));
    let key = ObjectKey::new(dir, "large.mp4").unwrap();
    provider.commit(&staged, &key).await.unwrap();
    let back = provider.get_bytes(&key).await.unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back.as_ref() == &data[..], "multipart round trip changed the bytes");
}

async fn commit_never_overwrites(provider: &Provider, dir: &str) {
    let key = ObjectKey::new(dir, "once.mp4").unwrap();
    let first = provider.upload(pieces(b"first", 2), 100).await.unwrap();
    provider.commit(&first, &key).await.unwrap();
    let second = provider.upload(pieces(b"second", 2), 100).await.unwrap();
    let err = provider.commit(&second, &key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(provider.get_bytes(&key).await.unwrap().as_ref(), b"first");
    provider.discard(second).await;
    // A direct put is the way to replace an object.
    provider.put(&key, pieces(b"third", 2), 100).await.unwrap();
    assert_eq!(provider.get_bytes(&key).await.unwrap().as_ref(), b"third");
}

async fn direct_put(provider: &Provider, dir: &str) {
    let key = ObjectKey::new(dir, "direct.mp4").unwrap();
    for (len, seed) in [(50_000, 10), (9 * 1024 * 1024, 11)] {
        let data = pattern(len, seed);
        let stored = provider.put(&key, pieces(&data, 300_000), 64 << 20).await.unwrap();
        assert_eq!(stored.size, len as u64);
        assert_eq!(stored.sha256, hex::encode(Sha256::digest(&data)));
        assert!(provider.get_bytes(&key).await.unwrap().as_ref() == &data[..], "put of {len} bytes");
    }
    provider.delete(&key).await.unwrap();
}

/// Both write paths, small (buffered) and large (multipart).
async fn each_write(
    provider: &Provider,
    dir: &str,
    len: usize,
    piece: usize,
    max: u64,
    body_error: bool,
) -> Vec<osprey_core::Error> {
    let mut errors = Vec::new();
    for direct in [false, true] {
        let data = pattern(len, 3);
        let tail: Vec<Piece> = match body_error {
            true => vec![Err(std::io::Error::other("connection reset"))],
            false => vec![],
        };
        let body = pieces(&data, piece).chain(stream::iter(tail));
        let result = match direct {
            true => provider.put(&ObjectKey::new(dir, "failed.mp4").unwrap(), body, max).await.map(|_| ()),
            false => provider.upload(body, max).await.map(|_| ()),
        };
        errors.push(result.unwrap_err());
    }
    errors
}

async fn oversize_leaves_nothing(provider: &Provider, dir: &str) {
    let before = stored_keys(provider, dir).await;
    let small = each_write(provider, dir, 10_001, 1000, 10_000, false).await;
    let multipart = each_write(provider, dir, 9 * 1024 * 1024, 1 << 20, 8_500_000, false).await;
    for err in small.iter().chain(&multipart) {
        assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    }
    assert_eq!(stored_keys(provider, dir).await, before);
}

async fn broken_body_leaves_nothing(provider: &Provider, dir: &str) {
    let before = stored_keys(provider, dir).await;
    for len in [1000usize, 9 * 1024 * 1024] {
        for err in each_write(provider, dir, len, 64 * 1024, 64 << 20, true).await {
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
            assert!(err.to_string().contains("connection reset"), "{err}");
        }
    }
    assert_eq!(stored_keys(provider, dir).await, before);
}

async fn delete_is_idempotent(provider: &Provider, dir: &str) {
    let key = ObjectKey::new(dir, "gone.mp4").unwrap();
    let staged = provider.upload(pieces(b"x", 1), 10).await.unwrap();
    provider.commit(&staged, &key).await.unwrap();
    provider.delete(&key).await.unwrap();
    provider.delete(&key).await.unwrap();
    assert_eq!(provider.size(&key).await.unwrap(), None);
    let err = provider.get_bytes(&key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

async fn concurrent_uploads_all_commit(provider: &Provider, dir: &str) {
    for round in 0..8 {
        let uploads = (0..16).map(|i| async move {
            let data = pattern(20_000 + i, i as u8);
            let staged = provider.upload(pieces(&data, 4096), 1 << 20).await.unwrap();
            let key = ObjectKey::new(dir, &format!("parallel-{round}-{i}.mp4")).unwrap();
            provider.commit(&staged, &key).await.unwrap_or_else(|e| panic!("commit {i} of round {round}: {e}"));
            assert_eq!(provider.get_bytes(&key).await.unwrap().as_ref(), &data[..]);
        });
        futures::future::join_all(uploads).await;
    }
}
