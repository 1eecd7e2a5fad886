//! The vault: accepts chunks from agents (Kerberos-compatible), stores them through a storage
//! provider, records their metadata and, in the same database transaction, the event announcing
//! them; a relay publishes those events to the bus (transactional outbox).

mod api;
mod auth;
pub mod db;
mod error;
pub mod filename;
mod forward;
mod ingest;
pub mod metrics;
mod relay;
pub mod retention;
mod signing;
mod tus;

pub use signing::Signer;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use osprey_bus::Bus;
use osprey_core::config::Config;
use osprey_core::error::ResultExt;
use osprey_core::{Clock, ErrorKind, Result};
use osprey_store::Providers;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) struct AppState {
    config: Config,
    db: db::Db,
    providers: Providers,
    accounts: auth::Accounts,
    signer: Signer,
    clock: Arc<dyn Clock>,
    bus: Arc<dyn Bus>,
    /// Wakes the relay when an upload committed an event.
    relay_wake: Notify,
    /// Wakes the forwarder when a chunk was stored.
    forward_wake: Notify,
    /// Chunk ids being uploaded now: a second upload of the same key waits its turn by failing.
    uploading: Mutex<HashSet<String>>,
    /// This process, as the owner of its upload claims in the database (shared by replicas).
    replica: String,
}

impl AppState {
    /// A time-limited download link for a stored chunk: the provider's own pre-signed URL where
    /// it has one (S3, GCS, Azure), else a link to the vault signed with its key.
    async fn download_url(&self, chunk_id: &str, provider: &str, key: &str, ttl_secs: u64) -> osprey_core::Result<(String, i64)> {
        if let Some(p) = self.providers.get(provider) {
            let key = osprey_core::ObjectKey::parse(key)?;
            if let Some(url) = p.signed_url(&key, std::time::Duration::from_secs(ttl_secs)).await? {
                return Ok((url, self.clock.unix_secs() + ttl_secs as i64));
            }
        }
        Ok(self.signer.url(chunk_id, ttl_secs))
    }
}

/// A running vault: its HTTP server and outbox relay.
pub struct Vault {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    server: JoinHandle<Result<()>>,
    relay: JoinHandle<()>,
}

impl Vault {
    /// Opens the database, binds `config.vault.listen` and starts serving and relaying.
    pub async fn start(
        mut config: Config,
        bus: Arc<dyn Bus>,
        providers: Providers,
        clock: Arc<dyn Clock>,
    ) -> Result<Vault> {
        let listener = tokio::net::TcpListener::bind(config.vault.listen)
            .await
            .kind_ctx(ErrorKind::Unavailable, || format!("cannot listen on {}", config.vault.listen))?;
        let addr = listener.local_addr().kind_ctx(ErrorKind::Internal, || "no local address".into())?;
        config.vault.listen = addr;
        let state = Arc::new(open_state(config, bus, providers, clock).await?);
        metrics::install();

        let shutdown = CancellationToken::new();
        let relay = tokio::spawn(relay::run(state.clone(), shutdown.clone()));
        tokio::spawn(clean_staging(state.clone()));
        tokio::spawn(expire_tus_uploads(state.clone(), shutdown.clone()));
        tokio::spawn(forward::run(state.clone(), shutdown.clone()));
        tokio::spawn(retention::run(
            state.db.clone(),
            state.providers.clone(),
            state.config.clone(),
            state.clock.clone(),
            shutdown.clone(),
        ));
        let app = router(state);
        let token = shutdown.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
                .kind_ctx(ErrorKind::Unavailable, || "http server failed".into())
        });
        tracing::info!(%addr, "vault listening");
        Ok(Vault { addr, shutdown, server, relay })
    }

    /// Stops accepting requests, lets requests in progress finish, and stops the relay.
    pub async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        self.relay.await.ok();
        self.server.await.kind_ctx(ErrorKind::Internal, || "http server task failed".into())?
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run_until(self, shutdown: CancellationToken) -> Result<()> {
        shutdown.cancelled().await;
        self.stop().await
    }
}

async fn open_state(
    config: Config,
    bus: Arc<dyn Bus>,
    providers: Providers,
    clock: Arc<dyn Clock>,
) -> Result<AppState> {
    let db = db::Db::open(&config.database_url()).await?;
    let accounts = auth::Accounts::from_config(&config.vault.accounts);
    if accounts.iter().next().is_none() {
        tracing::warn!("no accounts configured: every upload will be refused");
    }
    for (account, access_key, secret) in accounts.iter() {
        let secret_sha = hex::encode(Sha256::digest(secret.as_bytes()));
        db.upsert_account(&account.name, access_key, &secret_sha, clock.unix_millis()).await?;
    }
    let key = signing::load_key(config.vault.signing_key.as_deref(), &config.data_dir)?;
    let signer = Signer::new(key, config.public_url(), clock.clone())?;
    Ok(AppState {
        config,
        db,
        providers,
        accounts,
        signer,
        clock,
        bus,
        relay_wake: Notify::new(),
        forward_wake: Notify::new(),
        uploading: Mutex::default(),
        replica: uuid::Uuid::new_v4().to_string(),
    })
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/storage", post(ingest::upload).layer(DefaultBodyLimit::disable()))
        .route("/storage/blob", get(api::kerberos_blob))
        .route("/storage/tus", post(tus::create).options(tus::options))
        .route("/storage/tus/", post(tus::create).options(tus::options))
        .route(
            "/storage/tus/{id}",
            axum::routing::head(tus::head)
                .patch(tus::patch)
                .delete(tus::delete)
                .options(tus::options)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v1/recordings", get(api::list))
        .route("/api/v1/recordings/{id}", get(api::get))
        .route("/api/v1/recordings/{id}/url", get(api::signed_url))
        .route("/api/v1/download/{id}", get(api::download))
        .route("/healthz", get(api::health))
        .route("/metrics", get(api::metrics))
        .fallback(api::not_found)
        .with_state(state)
}

/// Removes resumable uploads left unfinished past `vault.tus_expiry_secs`, every 10 minutes.
async fn expire_tus_uploads(state: Arc<AppState>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let removed = tus::remove_expired(&state).await;
        if removed > 0 {
            tracing::info!(removed, "removed expired resumable uploads");
        }
    }
}

/// Removes uploads left in staging by a process that died mid-upload.
async fn clean_staging(state: Arc<AppState>) {
    for provider in state.providers.iter() {
        match provider.clean_staging(Duration::from_secs(3600)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(provider = provider.name(), removed = n, "removed stale staged uploads"),
            Err(e) => tracing::warn!(provider = provider.name(), error = %e, "cannot clean staging"),
        }
    }
}
