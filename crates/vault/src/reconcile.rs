//! Reconciliation: storage against metadata, at start, periodically, and as `osprey vault check`.
//!
//! It finds objects without rows (orphans), rows without objects (loss), claims of dead vaults,
//! staging, multipart and tus leftovers, and unpublished events without a recording; with
//! `repair` it removes what is left over and marks what is lost.
//!
//! Invariant: it deletes an object or a temporary only while holding the upload claim of its
//! chunk, after finding again that no row points at it; an upload in progress holds that claim,
//! so nothing a live upload is writing is ever touched. It marks a row lost only after reading
//! the row again and finding its object still absent. Rows are read before objects are listed,
//! so an upload that commits during the pass is never taken for a loss.

use crate::claims::Claims;
use crate::config::Setup;
use crate::db::Db;
use crate::{metrics as m, AppState};
use osprey_core::{ChunkId, Clock, ObjectKey, Result};
use osprey_store::{Provider, Providers};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Temporaries without a chunk to claim (untagged staging, tus files half created) are removed
/// only past this age.
const UNCLAIMABLE_AGE: Duration = Duration::from_secs(3600);
const TUS_PARTIAL_AGE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    OrphanObject,
    MissingObject,
    StaleClaim,
    StagedLeftover,
    MultipartLeftover,
    TusLeftover,
    OrphanEvent,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::OrphanObject => "orphan_object",
            Kind::MissingObject => "missing_object",
            Kind::StaleClaim => "stale_claim",
            Kind::StagedLeftover => "staged_leftover",
            Kind::MultipartLeftover => "multipart_leftover",
            Kind::TusLeftover => "tus_leftover",
            Kind::OrphanEvent => "orphan_event",
        }
    }
}

/// One problem found, and what was done about it.
#[derive(Debug, Clone)]
pub struct Finding {
    pub kind: Kind,
    pub provider: String,
    /// The object key, claim or temporary, as a user would look for it.
    pub what: String,
    pub action: &'static str,
}

#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Objects outside every account's space, not touched.
    pub foreign: usize,
}

impl Report {
    /// Recordings whose object is gone: data loss.
    pub fn loss(&self) -> usize {
        self.findings.iter().filter(|f| f.kind == Kind::MissingObject).count()
    }

    pub fn unrepaired(&self) -> usize {
        self.findings.iter().filter(|f| !is_repair(f.action)).count()
    }

    fn add(&mut self, kind: Kind, provider: &str, what: impl Into<String>, action: &'static str) {
        metrics::counter!(m::RECONCILE_FOUND, "kind" => kind.as_str()).increment(1);
        if is_repair(action) {
            metrics::counter!(m::RECONCILE_REPAIRED, "kind" => kind.as_str()).increment(1);
        }
        self.findings.push(Finding { kind, provider: provider.to_string(), what: what.into(), action });
    }
}

/// Whether a finding's action fixed it (the others only found it).
fn is_repair(action: &str) -> bool {
    matches!(action, "removed" | "released" | "marked lost")
}

pub(crate) struct Reconciler {
    db: Db,
    providers: Providers,
    claims: Arc<Claims>,
    clock: Arc<dyn Clock>,
    accounts: HashSet<String>,
    tus_dir: PathBuf,
    tus_expiry: Duration,
}

impl Reconciler {
    fn new(config: &Setup, db: Db, providers: Providers, claims: Arc<Claims>, clock: Arc<dyn Clock>) -> Self {
        Reconciler {
            db,
            providers,
            claims,
            clock,
            accounts: config.vault.accounts.iter().map(|a| a.name.clone()).collect(),
            tus_dir: crate::tus::dir(&config.data_dir),
            tus_expiry: config.vault.tus_expiry,
        }
    }

    /// Every check; with `repair`, every fix.
    pub async fn full(&self, repair: bool) -> Result<Report> {
        let mut report = Report::default();
        self.stale_claims(repair, &mut report).await?;
        for provider in self.providers.iter() {
            self.objects(provider, repair, &mut report).await?;
            self.staging(provider, repair, &mut report).await?;
            self.multipart(provider, repair, &mut report).await?;
        }
        self.tus(repair, &mut report).await;
        self.events(repair, &mut report).await?;
        Ok(report)
    }

    /// Claims of vaults that died: taken over, what they left removed, then released.
    pub async fn stale_claims(&self, repair: bool, report: &mut Report) -> Result<()> {
        for claim in self.db.stale_claims(self.clock.timestamp()).await? {
            if !repair {
                report.add(Kind::StaleClaim, &claim.provider, &claim.object_key, "found");
                continue;
            }
            let Some(guard) = self.claims.claim(&claim.chunk_id, &claim.provider, &claim.object_key).await? else {
                continue; // an upload of that chunk took it over first
            };
            if let (Some(provider), Ok(key)) =
                (self.providers.get(&claim.provider), ObjectKey::parse(&claim.object_key))
            {
                if self.db.recording(&claim.chunk_id).await?.is_none() && provider.size(&key).await?.is_some() {
                    provider.delete(&key).await?;
                    report.add(Kind::OrphanObject, provider.name(), key.as_str(), "removed");
                }
                for _ in 0..provider.remove_partials(&key, &claim.chunk_id).await? {
                    report.add(Kind::MultipartLeftover, provider.name(), key.as_str(), "removed");
                }
            }
            guard.release().await;
            report.add(Kind::StaleClaim, &claim.provider, &claim.object_key, "released");
        }
        Ok(())
    }

    async fn objects(&self, provider: &Provider, repair: bool, report: &mut Report) -> Result<()> {
        // Rows first: a row read here had its object written before, so the listing has it.
        let rows: HashMap<String, (String, bool)> = self
            .db
            .provider_keys(provider.name())
            .await?
            .into_iter()
            .map(|(id, key, gone)| (key, (id, gone)))
            .collect();
        let objects = provider.list(None).await?;
        let present: HashSet<&str> = objects.iter().map(|(k, _)| k.as_str()).collect();
        for (key, _) in &objects {
            if rows.contains_key(key) {
                continue;
            }
            let in_account = key.split('/').next().is_some_and(|first| self.accounts.contains(first));
            match ObjectKey::parse(key) {
                Ok(key) if in_account => self.orphan(provider, &key, repair, report).await?,
                _ => report.foreign += 1,
            }
        }
        for (key, (chunk_id, gone)) in &rows {
            if *gone || present.contains(key.as_str()) {
                continue;
            }
            self.missing(provider, key, chunk_id, repair, report).await?;
        }
        Ok(())
    }

    async fn orphan(&self, provider: &Provider, key: &ObjectKey, repair: bool, report: &mut Report) -> Result<()> {
        let chunk_id = ChunkId::derive(provider.name(), key.as_str());
        let Some(guard) = self.claims.claim(chunk_id.as_str(), provider.name(), key.as_str()).await? else {
            return Ok(()); // being uploaded now
        };
        let orphan = self.db.recording(chunk_id.as_str()).await?.is_none() && provider.size(key).await?.is_some();
        if orphan && repair {
            provider.delete(key).await?;
        }
        guard.release().await;
        if orphan {
            report.add(Kind::OrphanObject, provider.name(), key.as_str(), if repair { "removed" } else { "found" });
        }
        Ok(())
    }

    async fn missing(
        &self,
        provider: &Provider,
        key: &str,
        chunk_id: &str,
        repair: bool,
        report: &mut Report,
    ) -> Result<()> {
        let live = self.db.recording(chunk_id).await?.is_some_and(|r| r.deleting_at.is_none() && r.lost_at.is_none());
        let Ok(parsed) = ObjectKey::parse(key) else { return Ok(()) };
        if !live || provider.size(&parsed).await?.is_some() {
            return Ok(());
        }
        if repair {
            self.db.mark_lost(chunk_id, self.clock.timestamp()).await?;
        }
        tracing::error!(provider = provider.name(), key, chunk_id, "recording has no object: data lost");
        report.add(Kind::MissingObject, provider.name(), key, if repair { "marked lost" } else { "found" });
        Ok(())
    }

    async fn staging(&self, provider: &Provider, repair: bool, report: &mut Report) -> Result<()> {
        for leftover in provider.staged().await? {
            let chunk = leftover.tag.as_deref().and_then(ChunkId::parse);
            let guard = match &chunk {
                Some(id) => match self.claims.claim(id.as_str(), provider.name(), "").await? {
                    Some(g) => Some(g),
                    None => continue, // its upload is comparing a retry now
                },
                None if leftover.age < UNCLAIMABLE_AGE => continue,
                None => None,
            };
            if repair {
                provider.remove_staged(&leftover).await?;
            }
            if let Some(g) = guard {
                g.release().await;
            }
            report.add(Kind::StagedLeftover, provider.name(), &leftover.path, if repair { "removed" } else { "found" });
        }
        Ok(())
    }

    async fn multipart(&self, provider: &Provider, repair: bool, report: &mut Report) -> Result<()> {
        for (path, key, age) in provider.multipart_leftovers() {
            // A staged upload's temporary is named after the staging object, itself after its chunk.
            let chunk = match key.strip_prefix("_staging/") {
                Some(staged) => staged.split_once('.').and_then(|(tag, _)| ChunkId::parse(tag)),
                None => ObjectKey::parse(&key).ok().map(|k| ChunkId::derive(provider.name(), k.as_str())),
            };
            let guard = match &chunk {
                Some(id) => match self.claims.claim(id.as_str(), provider.name(), "").await? {
                    Some(g) => Some(g),
                    None => continue, // an upload is writing it
                },
                None if age < UNCLAIMABLE_AGE => continue,
                None => None,
            };
            if repair {
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(error = %e, "cannot remove a multipart leftover");
                }
            }
            if let Some(g) = guard {
                g.release().await;
            }
            report.add(
                Kind::MultipartLeftover,
                provider.name(),
                format!("{key}#…"),
                if repair { "removed" } else { "found" },
            );
        }
        Ok(())
    }

    /// Files of resumable uploads that can never finish: expired, or half created by a crash.
    async fn tus(&self, repair: bool, report: &mut Report) {
        let Ok(entries) = std::fs::read_dir(&self.tus_dir) else { return };
        let now = self.clock.timestamp();
        let files: Vec<(String, Duration)> = entries
            .flatten()
            .map(|e| {
                let age = e
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .unwrap_or_default();
                (e.file_name().to_string_lossy().to_string(), age)
            })
            .collect();
        let names: HashSet<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        for (name, age) in &files {
            let leftover = if let Some(id) = name.strip_suffix(".json") {
                let file = std::fs::read(self.tus_dir.join(name)).unwrap_or_default();
                crate::tus::expired(&file, self.tus_expiry, now) || !names.contains(format!("{id}.part").as_str())
            } else if let Some(id) = name.strip_suffix(".part") {
                !names.contains(format!("{id}.json").as_str()) && *age > TUS_PARTIAL_AGE
            } else {
                *age > TUS_PARTIAL_AGE
            };
            if !leftover {
                continue;
            }
            if repair {
                std::fs::remove_file(self.tus_dir.join(name)).ok();
            }
            report.add(Kind::TusLeftover, "", format!("tus/{name}"), if repair { "removed" } else { "found" });
        }
    }

    async fn events(&self, repair: bool, report: &mut Report) -> Result<()> {
        let ids = self.db.events_without_recording().await?;
        if repair {
            self.db.delete_events(&ids).await?;
        }
        for id in ids {
            report.add(Kind::OrphanEvent, "", format!("outbox #{id}"), if repair { "removed" } else { "found" });
        }
        Ok(())
    }
}

/// `osprey vault check [--repair]`: one full pass from outside a running vault.
pub async fn check_from_config(config: &Setup, clock: Arc<dyn Clock>, repair: bool) -> Result<Report> {
    let db = Db::open(&config.database_url()).await?;
    let providers = config.providers()?;
    let claims = Claims::new(db.clone(), clock.clone(), config.vault.claim_lease);
    let shutdown = CancellationToken::new();
    let renewal = tokio::spawn(claims.clone().run_renewal(shutdown.clone()));
    let report = Reconciler::new(config, db, providers, claims, clock).full(repair).await;
    shutdown.cancel();
    renewal.await.ok();
    report
}

/// In the vault: a full repair at start and every `reconcile_interval_secs`, dead vaults'
/// claims every `claim_lease_secs`.
pub(crate) async fn run(state: Arc<AppState>, shutdown: CancellationToken) {
    let v = &state.config.vault;
    let r = Reconciler::new(
        &state.config,
        state.db.clone(),
        state.providers.clone(),
        state.claims.clone(),
        state.clock.clone(),
    );
    let mut claims_every = tokio::time::interval(v.claim_lease);
    let mut full_every = tokio::time::interval(v.reconcile_interval);
    loop {
        let full = tokio::select! {
            _ = full_every.tick() => true,
            _ = claims_every.tick() => false,
            _ = shutdown.cancelled() => return,
        };
        let mut report = Report::default();
        let result = match full {
            true => r.full(true).await.map(|full| report = full),
            false => r.stale_claims(true, &mut report).await,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "reconciliation failed; will try again");
        }
        for f in &report.findings {
            tracing::warn!(kind = f.kind.as_str(), provider = %f.provider, what = %f.what, action = f.action, "reconciliation");
        }
    }
}
