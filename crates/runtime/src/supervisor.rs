//! A role's background tasks, owned in one place. Each task watches the supervisor's token;
//! `stop` cancels it, waits for every task up to one deadline, logs each step, and aborts (and
//! names) what did not stop in time, so a stuck task cannot hold a shutdown forever.

use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct Supervisor {
    role: &'static str,
    token: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

/// How each task ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stopped {
    pub stopped: Vec<&'static str>,
    pub panicked: Vec<&'static str>,
    /// Still running at the deadline, and aborted.
    pub aborted: Vec<&'static str>,
}

impl Supervisor {
    pub fn new(role: &'static str) -> Self {
        Supervisor { role, token: CancellationToken::new(), tasks: Vec::new() }
    }

    /// The token every task must watch; `stop` cancels it.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Runs `task` until it ends or the supervisor stops it.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        tracing::debug!(role = self.role, task = name, "task started");
        self.tasks.push((name, tokio::spawn(task)));
    }

    /// Cancels the token, then waits for each task, all within `deadline`.
    pub async fn stop(self, deadline: Duration) -> Stopped {
        self.token.cancel();
        let until = tokio::time::Instant::now() + deadline;
        let mut outcome = Stopped::default();
        for (name, mut handle) in self.tasks {
            match tokio::time::timeout_at(until, &mut handle).await {
                Ok(Ok(())) => {
                    tracing::debug!(role = self.role, task = name, "task stopped");
                    outcome.stopped.push(name);
                }
                Ok(Err(e)) => {
                    tracing::error!(role = self.role, task = name, error = %e, "task panicked");
                    outcome.panicked.push(name);
                }
                Err(_) => {
                    tracing::warn!(role = self.role, task = name, ?deadline, "task did not stop in time; aborted");
                    handle.abort();
                    outcome.aborted.push(name);
                }
            }
        }
        tracing::info!(
            role = self.role,
            stopped = outcome.stopped.len(),
            aborted = outcome.aborted.len(),
            "background tasks stopped"
        );
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_waits_for_tasks_that_watch_the_token_and_aborts_the_rest() {
        let mut s = Supervisor::new("test");
        let token = s.token();
        s.spawn("polite", async move { token.cancelled().await });
        s.spawn("stuck", std::future::pending());
        s.spawn("panics", async { panic!("on purpose") });
        let stopped = s.stop(Duration::from_millis(200)).await;
        assert_eq!(stopped, Stopped { stopped: vec!["polite"], panicked: vec!["panics"], aborted: vec!["stuck"] });
    }
}
