//! The failure limiter of key checks: every check of an access key and secret (Kerberos headers,
//! Basic, tus, `/ping`, heartbeats, `/api/v1`, `GET /storage`, sign-in) is counted here, so that
//! guessing a secret is slow wherever it is tried, and a lockout stays as narrow as it can.
//!
//! Policy, within a sliding window of [`WINDOW`] (docs/vault.md, "Threat model"):
//! - a client and one configured access key: [`PER_PAIR`] failures, then that pair waits;
//! - one configured access key from any client: [`PER_KEY`] failures, then the key waits, except
//!   for clients that used it successfully in the last [`KNOWN_FOR`] (its owner keeps working
//!   while someone elsewhere guesses);
//! - a client with access keys that are not configured: [`PER_CLIENT`] failures, then it waits.
//!
//! A client is its IPv4 address or its IPv6 /64 (an attacker rotating addresses inside one
//! network's prefix is one client). Invariants: a check and its count happen under one lock, so
//! a burst of parallel guesses gets exactly the limit through; each table is bounded
//! ([`CAPACITY`] entries), and when one is full the entry whose last failure is oldest goes, so
//! no flood resets anyone else's count at once. The per-key table holds configured keys only.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

pub const WINDOW: Duration = Duration::from_secs(300);
pub const PER_PAIR: usize = 10;
pub const PER_KEY: usize = 100;
pub const PER_CLIENT: usize = 20;
pub const KNOWN_FOR: Duration = Duration::from_secs(12 * 3600);
pub const CAPACITY: usize = 50_000;

/// A client as the limiter counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Client(u128);

impl From<IpAddr> for Client {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Client(u32::from(v4) as u128),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Client(u32::from(v4) as u128),
                // The /64: the low 64 bits are the host's own to choose.
                None => Client((u128::from(v6) >> 64 << 64) | 1),
            },
        }
    }
}

/// Why a check did not let the request in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The keys are wrong (counted).
    Wrong,
    /// Too many failures: try again after this long (nothing was checked).
    Limited(Duration),
}

#[derive(Default)]
pub struct Limiter(Mutex<Tables>);

#[derive(Default)]
struct Tables {
    pairs: Table<(Client, String)>,
    keys: Table<String>,
    clients: Table<Client>,
    /// Last success of a client with a key, unix ms.
    known: HashMap<(Client, String), i64>,
}

impl Limiter {
    /// Runs `check` (a comparison of keys, quick and synchronous) unless `client` is limited for
    /// `access_key`, and counts its failure. `configured` says whether the access key is one of
    /// the accounts'. `now` is unix ms.
    pub fn check<T>(
        &self,
        client: Client,
        access_key: &str,
        configured: bool,
        now: i64,
        check: impl FnOnce() -> Option<T>,
    ) -> Result<T, Refused> {
        let mut t = self.0.lock().unwrap();
        let pair = (client, access_key.to_string());
        let known = t.known.get(&pair).is_some_and(|at| now - at < KNOWN_FOR.as_millis() as i64);
        let wait = match configured {
            true => {
                t.pairs.wait(&pair, now, PER_PAIR).or(if known { None } else { t.keys.wait(&pair.1, now, PER_KEY) })
            }
            false => t.clients.wait(&client, now, PER_CLIENT),
        };
        if let Some(wait) = wait {
            return Err(Refused::Limited(wait));
        }
        match check() {
            Some(value) => {
                t.pairs.forget(&pair);
                if t.known.len() >= CAPACITY && !t.known.contains_key(&pair) {
                    evict_oldest(&mut t.known);
                }
                t.known.insert(pair, now);
                Ok(value)
            }
            None if configured => {
                t.keys.failed(pair.1.clone(), now);
                t.pairs.failed(pair, now);
                Err(Refused::Wrong)
            }
            None => {
                t.clients.failed(client, now);
                Err(Refused::Wrong)
            }
        }
    }

    /// Entries held, for tests of the bound.
    #[cfg(test)]
    fn len(&self) -> usize {
        let t = self.0.lock().unwrap();
        t.pairs.entries.len() + t.keys.entries.len() + t.clients.entries.len() + t.known.len()
    }
}

fn evict_oldest<K: Clone + Eq + Hash>(map: &mut HashMap<K, i64>) {
    if let Some(oldest) = map.iter().min_by_key(|(_, at)| **at).map(|(k, _)| k.clone()) {
        map.remove(&oldest);
    }
}

/// Failures per key within the window, oldest first.
struct Table<K> {
    entries: HashMap<K, VecDeque<i64>>,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Table { entries: HashMap::new() }
    }
}

impl<K: Clone + Eq + Hash> Table<K> {
    /// How long `key` must wait at `now`, when it has `max` failures in the window.
    fn wait(&mut self, key: &K, now: i64, max: usize) -> Option<Duration> {
        let window = WINDOW.as_millis() as i64;
        let seen = self.entries.get_mut(key)?;
        while seen.front().is_some_and(|at| *at <= now - window) {
            seen.pop_front();
        }
        if seen.is_empty() {
            self.entries.remove(key);
            return None;
        }
        let oldest = seen[seen.len().saturating_sub(max)];
        (seen.len() >= max).then(|| Duration::from_millis((oldest + window - now).max(1000) as u64))
    }

    fn failed(&mut self, key: K, now: i64) {
        if self.entries.len() >= CAPACITY && !self.entries.contains_key(&key) {
            self.evict(now);
        }
        let seen = self.entries.entry(key).or_default();
        seen.push_back(now);
        // More than any limit needs: the oldest beyond it can never matter again.
        if seen.len() > PER_KEY {
            seen.pop_front();
        }
    }

    fn forget(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Drops what has left the window; if that frees too little, the tenth of the entries that
    /// failed longest ago (one sort per tenth of the table, not a scan per new entry).
    fn evict(&mut self, now: i64) {
        let window = WINDOW.as_millis() as i64;
        self.entries.retain(|_, seen| seen.back().is_some_and(|at| *at > now - window));
        if self.entries.len() < CAPACITY {
            return;
        }
        let mut last: Vec<(i64, K)> =
            self.entries.iter().map(|(k, seen)| (*seen.back().unwrap_or(&0), k.clone())).collect();
        let tenth = CAPACITY / 10;
        last.select_nth_unstable_by_key(tenth, |(at, _)| *at);
        for (_, key) in &last[..tenth] {
            self.entries.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(ip: &str) -> Client {
        ip.parse::<IpAddr>().unwrap().into()
    }

    fn guess(l: &Limiter, c: Client, key: &str, now: i64) -> Result<(), Refused> {
        l.check(c, key, key.starts_with("real"), now, || None::<()>)
    }

    #[test]
    fn a_pair_waits_after_its_failures_and_others_do_not() {
        let l = Limiter::default();
        let (a, b) = (client("10.0.0.1"), client("10.0.0.2"));
        for i in 0..PER_PAIR as i64 {
            assert_eq!(guess(&l, a, "real-1", i), Err(Refused::Wrong));
        }
        assert!(matches!(guess(&l, a, "real-1", 20), Err(Refused::Limited(_))));
        // Right keys from the limited pair are refused too: otherwise the limit is an oracle.
        assert!(matches!(l.check(a, "real-1", true, 21, || Some(())), Err(Refused::Limited(_))));
        // The same address with another account's key (a colleague behind the proxy) is not held back.
        assert_eq!(l.check(a, "real-2", true, 22, || Some(())), Ok(()));
        assert_eq!(l.check(b, "real-1", true, 23, || Some(())), Ok(()));
        let window = WINDOW.as_millis() as i64;
        assert_eq!(l.check(a, "real-1", true, window + 10, || Some(())), Ok(()), "the window passed");
    }

    #[test]
    fn a_key_guessed_from_many_addresses_waits_except_for_its_known_clients() {
        let l = Limiter::default();
        let owner = client("192.0.2.7");
        assert_eq!(l.check(owner, "real-1", true, 0, || Some(())), Ok(()));
        for i in 0..PER_KEY {
            let c = client(&format!("10.1.{}.{}", i / 200, i % 200));
            assert_eq!(guess(&l, c, "real-1", 1), Err(Refused::Wrong));
        }
        assert!(matches!(guess(&l, client("10.9.9.9"), "real-1", 2), Err(Refused::Limited(_))));
        assert_eq!(l.check(owner, "real-1", true, 3, || Some(())), Ok(()), "the owner works on");
    }

    #[test]
    fn unknown_keys_count_per_client_and_ipv6_per_prefix() {
        let l = Limiter::default();
        for i in 0..PER_CLIENT {
            let c = client(&format!("2001:db8:1:2::{:x}", i + 1));
            assert_eq!(guess(&l, c, &format!("made-up-{i}"), 0), Err(Refused::Wrong));
        }
        assert!(matches!(guess(&l, client("2001:db8:1:2:ffff::9"), "other", 1), Err(Refused::Limited(_))));
        assert_eq!(guess(&l, client("2001:db8:1:3::1"), "other", 1), Err(Refused::Wrong), "another /64");
    }

    #[test]
    fn parallel_guesses_get_exactly_the_limit_through() {
        let l = std::sync::Arc::new(Limiter::default());
        let c = client("10.0.0.1");
        let checked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let threads: Vec<_> = (0..64)
            .map(|_| {
                let (l, checked) = (l.clone(), checked.clone());
                std::thread::spawn(move || {
                    let _ = l.check(c, "real-1", true, 5, || {
                        checked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(2));
                        None::<()>
                    });
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(checked.load(std::sync::atomic::Ordering::SeqCst), PER_PAIR);
    }

    #[test]
    fn a_flood_of_addresses_is_bounded_and_resets_nobody() {
        let l = Limiter::default();
        let victim = client("10.0.0.1");
        for i in 0..PER_PAIR as i64 {
            let _ = guess(&l, victim, "real-1", 1_000 + i);
        }
        // Unknown keys from many /64s: the per-client table fills and evicts its oldest.
        for i in 0..(CAPACITY + 5_000) as u128 {
            let c = Client(i << 64 | 1);
            let _ = guess(&l, c, "made-up", 2_000);
        }
        assert!(l.len() <= 2 * CAPACITY + 2, "{}", l.len());
        assert!(matches!(guess(&l, victim, "real-1", 3_000), Err(Refused::Limited(_))), "the pair's count survived");
    }
}
