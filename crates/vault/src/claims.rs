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
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long a claim waits for another upload of the same chunk in this process to finish: a
/// client that hung up after its last byte and retried at once gets the first upload's outcome
/// (a duplicate) rather than "in progress".
const WAIT_IN_PROCESS: Duration = Duration::from_secs(10);

pub(crate) struct Claims {
    db: Db,
    clock: Arc<dyn Clock>,
    /// This process as the owner of its claims.
    owner: String,
    lease: Duration,
    /// Chunk ids this process holds: a second claim here fails without asking the database,
    /// and these are the leases to renew.
    held: Mutex<HashSet<String>>,
    /// Told whenever this process gives up a claim.
    released: Notify,
}

impl Claims {
    pub fn new(db: Db, clock: Arc<dyn Clock>, lease: Duration) -> Arc<Claims> {
        Arc::new(Claims {
            db,
            clock,
            owner: uuid::Uuid::new_v4().to_string(),
            lease,
            held: Mutex::default(),
            released: Notify::new(),
        })
    }

    /// Claims `chunk_id` (the object `provider`/`key`); `None` while another upload holds it
    /// (one in this process is waited for a while: it is finishing on its own).
    pub async fn claim(self: &Arc<Self>, chunk_id: &str, provider: &str, key: &str) -> Result<Option<ClaimGuard>> {
        if !self.hold_in_process(chunk_id).await {
            return Ok(None);
        }
        // From here the guard's drop forgets the in-process hold whatever happens.
        let mut guard =
            ClaimGuard { claims: self.clone(), chunk_id: chunk_id.to_string(), in_db: false, took_over: false };
        let now = self.clock.timestamp();
        match self.db.claim_upload(chunk_id, provider, key, &self.owner, now, now + self.lease).await? {
            Claimed::Busy => return Ok(None),
            Claimed::Fresh => {}
            Claimed::TakenOver => guard.took_over = true,
        }
        guard.in_db = true;
        Ok(Some(guard))
    }

    async fn hold_in_process(&self, chunk_id: &str) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT_IN_PROCESS;
        loop {
            // Registered before looking, so a release between the two is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.held.lock().unwrap().insert(chunk_id.to_string()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return false;
            }
        }
    }

    /// Extends the lease of every claim this process holds.
    pub async fn renew(&self) -> Result<()> {
        let held: Vec<String> = self.held.lock().unwrap().iter().cloned().collect();
        if held.is_empty() {
            return Ok(());
        }
        let until = self.clock.timestamp() + self.lease;
        self.db.renew_claims(&self.owner, &held, until).await.map(|_| ())
    }

    /// Renews leases until `shutdown`.
    pub async fn run_renewal(self: Arc<Self>, shutdown: CancellationToken) {
        let period = (self.lease / 4).max(Duration::from_millis(100));
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
        self.claims.released.notify_waiters();
        // Only a panic ends a claim without `release` (uploads run in tasks of their own).
        if let (true, Ok(runtime)) = (self.in_db, tokio::runtime::Handle::try_current()) {
            runtime.spawn(release(self.claims.db.clone(), self.chunk_id.clone(), self.claims.owner.clone()));
        }
    }
}
