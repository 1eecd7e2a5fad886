//! Upload claims: one writer per chunk across every vault process on one database.
//!
//! Invariant: an object is written, and deleted, only by the process that holds its chunk's
//! claim, and a claim is released only after the chunk's row is committed or its object removed.
//! A claim is a row with a lease that its process renews (every quarter of the lease) while the
//! process lives; a claim whose lease ran out belongs to a dead process and is taken over by the
//! next upload of that chunk, or by reconciliation, which removes what the dead process left.
//! The rows of a chunk commit only while its claim is still held (`Db::insert_claimed`), so a
//! process that lost its lease (stalled past it) cannot commit over its successor.

use crate::db::{Claimed, Db};
use osprey_core::{Clock, Error, Result};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub(crate) struct Claims {
    db: Db,
    clock: Arc<dyn Clock>,
    /// This process as the owner of its claims.
    owner: String,
    lease_secs: i64,
    /// Chunk ids this process holds: a second claim here fails without asking the database,
    /// and these are the leases to renew.
    held: Mutex<HashSet<String>>,
}

impl Claims {
    pub fn new(db: Db, clock: Arc<dyn Clock>, lease_secs: u64) -> Arc<Claims> {
        Arc::new(Claims {
            db,
            clock,
            owner: uuid::Uuid::new_v4().to_string(),
            lease_secs: lease_secs as i64,
            held: Mutex::default(),
        })
    }

    /// Claims `chunk_id` (the object `provider`/`key`); `None` while another upload holds it.
    pub async fn claim(self: &Arc<Self>, chunk_id: &str, provider: &str, key: &str) -> Result<Option<ClaimGuard>> {
        if !self.held.lock().unwrap().insert(chunk_id.to_string()) {
            return Ok(None);
        }
        // From here the guard's drop forgets the in-process hold whatever happens.
        let mut guard =
            ClaimGuard { claims: self.clone(), chunk_id: chunk_id.to_string(), in_db: false, took_over: false };
        let now = self.clock.unix_secs();
        match self.db.claim_upload(chunk_id, provider, key, &self.owner, now, now + self.lease_secs).await? {
            Claimed::Busy => return Ok(None),
            Claimed::Fresh => {}
            Claimed::TakenOver => guard.took_over = true,
        }
        guard.in_db = true;
        Ok(Some(guard))
    }

    /// Extends the lease of every claim this process holds.
    pub async fn renew(&self) -> Result<()> {
        let held: Vec<String> = self.held.lock().unwrap().iter().cloned().collect();
        if held.is_empty() {
            return Ok(());
        }
        let until = self.clock.unix_secs() + self.lease_secs;
        self.db.renew_claims(&self.owner, &held, until).await.map(|_| ())
    }

    /// Renews leases until `shutdown`.
    pub async fn run_renewal(self: Arc<Self>, shutdown: CancellationToken) {
        let period = Duration::from_millis((self.lease_secs as u64 * 1000 / 4).max(100));
        let mut every = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            if let Err(e) = self.renew().await {
                tracing::warn!(error = %e, "cannot renew upload claims");
            }
        }
    }

    pub fn busy(key: &str) -> Error {
        Error::unavailable(format!("an upload of {key} is already in progress; retry later"))
    }
}

/// A claim held by this process; `release` gives it up.
pub(crate) struct ClaimGuard {
    claims: Arc<Claims>,
    chunk_id: String,
    in_db: bool,
    /// The claim was a dead vault's: its upload may have left temporaries behind.
    took_over: bool,
}

impl ClaimGuard {
    pub fn took_over(&self) -> bool {
        self.took_over
    }

    pub fn owner(&self) -> &str {
        &self.claims.owner
    }

    /// Whether this process still holds the claim in the database (its lease was not lost).
    pub async fn still_held(&self) -> Result<bool> {
        self.claims.db.holds_claim(&self.chunk_id, &self.claims.owner).await
    }

    pub async fn release(mut self) {
        if std::mem::take(&mut self.in_db) {
            release(self.claims.db.clone(), self.chunk_id.clone(), self.claims.owner.clone()).await;
        }
    }
}

async fn release(db: Db, chunk_id: String, owner: String) {
    if let Err(e) = db.release_upload(&chunk_id, &owner).await {
        // Not renewed any more, so the lease runs out and the claim is taken over.
        tracing::warn!(chunk_id, error = %e, "cannot release upload claim");
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        self.claims.held.lock().unwrap().remove(&self.chunk_id);
        // Only a panic ends a claim without `release` (uploads run in tasks of their own).
        if let (true, Ok(runtime)) = (self.in_db, tokio::runtime::Handle::try_current()) {
            runtime.spawn(release(self.claims.db.clone(), self.chunk_id.clone(), self.claims.owner.clone()));
        }
    }
}
