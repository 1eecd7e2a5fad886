//! The vault: accepts chunks from agents (Kerberos-compatible), stores them through a storage
//! provider, records their metadata and, in the same database transaction, the event announcing
//! them; a relay publishes those events to the bus (transactional outbox).

mod api;
mod auth;
mod claims;
pub mod config;
pub mod db;
mod error;
mod forward;
pub mod index;
mod ingest;
mod kerberos;
mod limiter;
mod live;
pub mod metrics;
mod openapi;
mod params;
mod reanalyse;
pub mod reconcile;
mod relay;
pub mod retention;
mod search;
mod server;
mod session;
mod signing;
mod tus;
mod web;

pub use config::{AccountConfig, Config, ForwardConfig, IndexConfig, RetentionRule, Setup};
pub use signing::Signer;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use osprey_bus::Bus;
use osprey_core::error::ResultExt;
use osprey_core::{Clock, ErrorKind, Result};
use osprey_runtime::Supervisor;
use osprey_store::Providers;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) struct AppState {
    config: Setup,
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
    /// Resumable uploads being written now: a second request on one waits its turn by failing.
    uploading: Mutex<HashSet<String>>,
    /// This process's upload claims, shared with every replica through the database.
    claims: Arc<claims::Claims>,
    /// Uploads in progress, each in a task of its own: stopping waits for them.
    tasks: TaskTracker,
    /// Failed key checks, for the limit (`limiter.rs`).
    limiter: limiter::Limiter,
    /// Live streams open, per account and per session (`live.rs`).
    streams: live::Streams,
    /// What is new, for the web app's pages (`GET /api/v1/live`).
    live: tokio::sync::broadcast::Sender<live::Note>,
    /// Cancelled when the vault stops: long answers (the live stream) end then.
    shutdown: CancellationToken,
}

impl AppState {
    /// A time-limited download link for a stored chunk: the provider's own pre-signed URL where
    /// it has one (S3, GCS, Azure), else a link to the vault signed with its key.
    async fn download_url(
        &self,
        chunk_id: &osprey_core::ChunkId,
        provider: &str,
        key: &osprey_core::ObjectKey,
        ttl_secs: u64,
    ) -> osprey_core::Result<(String, i64)> {
        if let Some(p) = self.providers.get(provider) {
            if let Some(url) = p.signed_url(key, std::time::Duration::from_secs(ttl_secs)).await? {
                return Ok((url, self.clock.unix_secs() + ttl_secs as i64));
            }
        }
        Ok(self.signer.url(chunk_id.as_str(), ttl_secs))
    }
}

/// How long a stop waits, in each of its two phases, before it stops waiting.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// A running vault: its HTTP server and its background tasks (outbox relay, claim renewal,
/// reconciliation, tus expiry, forwarding, retention).
pub struct Vault {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
    background: Supervisor,
    tasks: TaskTracker,
}

impl Vault {
    /// Opens the database, binds `config.vault.listen` and starts serving and relaying.
    pub async fn start(
        mut config: Setup,
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
        osprey_runtime::telemetry::install();

        let shutdown = state.shutdown.clone();
        let mut background = Supervisor::new("vault");
        let stop = background.token();
        background.spawn("outbox relay", relay::run(state.clone(), stop.clone()));
        background.spawn("claim renewal", state.claims.clone().run_renewal(stop.clone()));
        background.spawn("reconciliation", reconcile::run(state.clone(), stop.clone()));
        background.spawn("tus expiry", expire_tus_uploads(state.clone(), stop.clone()));
        background.spawn("forwarding", forward::run(state.clone(), stop.clone()));
        background.spawn("re-analysis", reanalyse::run(state.clone(), stop.clone()));
        if state.config.vault.index.enabled {
            let (db, bus, index, clock) =
                (state.db.clone(), state.bus.clone(), state.config.vault.index.clone(), state.clock.clone());
            let live = state.live.clone();
            background.spawn("results index", index::run(db, bus, index, clock, live, stop.clone()));
        }
        let (db, providers, config, clock) =
            (state.db.clone(), state.providers.clone(), state.config.clone(), state.clock.clone());
        background.spawn("retention", retention::run(db, providers, config, clock, stop));
        let v = &state.config.vault;
        let limits = server::Limits {
            header_read_timeout: v.header_read_timeout,
            idle_timeout: v.idle_timeout,
            max_connections_per_client: v.max_connections_per_client,
        };
        let tasks = state.tasks.clone();
        let server = tokio::spawn(server::serve(listener, router(state), limits, shutdown.clone()));
        tracing::info!(%addr, "vault listening");
        Ok(Vault { addr, shutdown, server, background, tasks })
    }

    /// Stops in two phases: no new connections, requests and uploads in progress finish
    /// (their rows committed, their claims released); then the background tasks stop. Each phase
    /// waits at most `STOP_DEADLINE`; what is left then is logged and dropped (an upload cut off
    /// so is not committed, and its client retries it).
    pub async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        tracing::info!("vault stopping: no new connections; waiting for requests in progress");
        self.tasks.close();
        let mut server = self.server;
        let requests = async {
            let served = (&mut server).await;
            self.tasks.wait().await;
            served
        };
        let served = match tokio::time::timeout(STOP_DEADLINE, requests).await {
            Ok(served) => served.kind_ctx(ErrorKind::Internal, || "http server task failed".into()),
            Err(_) => {
                tracing::warn!(deadline = ?STOP_DEADLINE, "requests still in progress at the deadline; cut off");
                server.abort();
                Ok(())
            }
        };
        self.background.stop(STOP_DEADLINE).await;
        tracing::info!("vault stopped");
        served
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run_until(self, shutdown: CancellationToken) -> Result<()> {
        shutdown.cancelled().await;
        self.stop().await
    }
}

async fn open_state(config: Setup, bus: Arc<dyn Bus>, providers: Providers, clock: Arc<dyn Clock>) -> Result<AppState> {
    let db = db::Db::open(&config.database_url()).await?;
    let accounts = auth::Accounts::from_config(&config.vault.accounts);
    if accounts.iter().next().is_none() {
        tracing::warn!("no accounts configured: every upload will be refused");
    }
    let key = signing::load_key(config.vault.signing_key.as_ref().map(|k| k.expose()), &config.data_dir)?;
    let signer = Signer::new(key, config.public_url(), clock.clone())?;
    let claims = claims::Claims::new(db.clone(), clock.clone(), config.vault.claim_lease);
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
        claims,
        tasks: TaskTracker::new(),
        limiter: limiter::Limiter::default(),
        streams: live::Streams::default(),
        live: live::channel(),
        shutdown: CancellationToken::new(),
    })
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(kerberos_routes(""))
        .merge(kerberos_routes("/api"))
        .route("/api/v1/recordings", get(api::list))
        .route("/api/v1/recordings/{id}", get(api::get))
        .route("/api/v1/recordings/{id}/url", get(api::signed_url))
        .route("/api/v1/recordings/{id}/detections", get(search::detections))
        .route("/api/v1/devices", get(api::devices))
        .route("/api/v1/events", get(search::list))
        .route("/api/v1/events/{id}", get(search::get))
        .route("/api/v1/events/{id}/thumbnail.jpg", get(search::thumbnail))
        .route("/api/v1/summary", get(search::summary))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/live", get(live::stream))
        .route("/api/v1/session", get(session::current).post(session::sign_in).delete(session::sign_out))
        .route("/api/v1/download/{id}", get(api::download))
        .route("/api/v1/system", get(api::system))
        .route("/api/v1/reanalyse", post(reanalyse::start).get(reanalyse::list))
        .route("/api/v1/reanalyse/{id}", get(reanalyse::get).delete(reanalyse::cancel))
        .route("/healthz", get(api::health))
        .route("/metrics", get(osprey_runtime::telemetry::metrics_handler))
        .merge(web::routes())
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), session::resolve))
        // Outside the session layer: it sees only the keys the client itself sent.
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::gate))
        .layer(axum::middleware::map_response(error::json_errors))
        .with_state(state)
}

/// The Kerberos Vault routes under `prefix`: Kerberos deployments tell agents to use
/// `https://vault.example.com/api`, older ones the root.
fn kerberos_routes(prefix: &str) -> Router<Arc<AppState>> {
    let at = |path: &str| format!("{prefix}{path}");
    let tus = Router::new()
        .route(&at("/storage/tus"), post(tus::create).options(tus::options))
        .route(&at("/storage/tus/"), post(tus::create).options(tus::options))
        .route(
            &at("/storage/tus/{id}"),
            axum::routing::head(tus::head)
                .patch(tus::patch)
                .delete(tus::delete)
                .options(tus::options)
                .layer(DefaultBodyLimit::disable()),
        )
        .layer(axum::middleware::map_response(tus::with_version));
    Router::new()
        .route(&at("/storage"), post(ingest::upload).get(kerberos::link).layer(DefaultBodyLimit::disable()))
        .route(&at("/storage/blob"), get(kerberos::blob))
        .route(&at("/ping"), post(kerberos::ping))
        .route(
            &at("/devices/heartbeat"),
            post(kerberos::heartbeat).layer(DefaultBodyLimit::max(kerberos::MAX_HEARTBEAT_BYTES)),
        )
        .merge(tus)
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
