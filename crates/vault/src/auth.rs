//! Account authentication. Kerberos agents send `X-Kerberos-Storage-AccessKey` and
//! `-SecretAccessKey`; API clients may use HTTP Basic with the same pair.
//!
//! Invariant: every request that carries keys passes [`gate`] first, the one place keys are
//! checked against the failure limiter (`limiter.rs`); a wrong pair is answered there (403, or
//! 429 with `Retry-After` once limited) and never reaches a handler. Sign-in checks its keys
//! through the same [`check_keys`]. Handlers then resolve the account from keys already checked.

use crate::config::AccountConfig;
use crate::error::{too_many_requests, ApiError};
use crate::limiter::Refused;
use crate::AppState;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use osprey_core::{Error, ErrorKind, Result};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use subtle::ConstantTimeEq;

use osprey_kerberos::wire::{ACCESS_KEY, SECRET_KEY};

#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    access_key: String,
    secret_key: String,
    providers: Vec<String>,
    main_provider: Option<String>,
}

impl Account {
    pub fn may_use(&self, provider: &str) -> bool {
        self.providers.is_empty() || self.providers.iter().any(|p| p == provider)
    }

    /// Where an upload that names no provider goes: the configured main provider, else the
    /// first this account may use (in `providers` order, else by name).
    pub fn main_provider<'a>(&'a self, configured: impl Iterator<Item = &'a str>) -> Option<String> {
        let mut configured = configured;
        self.main_provider
            .clone()
            .or_else(|| self.providers.first().cloned())
            .or_else(|| configured.next().map(str::to_string))
    }
}

#[derive(Debug, Clone, Default)]
pub struct Accounts(Vec<Account>);

impl Accounts {
    pub fn from_config(accounts: &[AccountConfig]) -> Self {
        Accounts(
            accounts
                .iter()
                .map(|a| Account {
                    name: a.name.clone(),
                    access_key: a.access_key.clone(),
                    secret_key: a.secret_key.expose().to_string(),
                    providers: a.providers.clone(),
                    main_provider: a.main_provider.clone(),
                })
                .collect(),
        )
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Account, &str, &str)> {
        self.0.iter().map(|a| (a, a.access_key.as_str(), a.secret_key.as_str()))
    }

    /// The account whose credentials the request carries (checked by [`gate`] on the way in).
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<&Account> {
        let (access, secret) = credentials(headers)?.ok_or_else(missing)?;
        self.with_keys(&access, &secret).ok_or_else(wrong_keys)
    }

    /// Whether `access` is one of the accounts' access keys.
    pub fn is_configured(&self, access: &str) -> bool {
        self.0.iter().any(|a| bool::from(a.access_key.as_bytes().ct_eq(access.as_bytes())))
    }

    /// The account with this key pair, compared in constant time.
    pub fn with_keys(&self, access: &str, secret: &str) -> Option<&Account> {
        let account = self.0.iter().find(|a| bool::from(a.access_key.as_bytes().ct_eq(access.as_bytes())))?;
        bool::from(account.secret_key.as_bytes().ct_eq(secret.as_bytes())).then_some(account)
    }

    /// The key pair of the account named `name`, while it is configured.
    pub fn keys_of(&self, name: &str) -> Option<(&str, &str)> {
        self.0.iter().find(|a| a.name == name).map(|a| (a.access_key.as_str(), a.secret_key.as_str()))
    }
}

fn wrong_keys() -> Error {
    Error::new(ErrorKind::PermissionDenied, "access key or secret key is wrong")
}

fn missing() -> Error {
    Error::new(
        ErrorKind::Unauthenticated,
        "missing credentials: send X-Kerberos-Storage-AccessKey and X-Kerberos-Storage-SecretAccessKey",
    )
}

/// The key pair a request carries, if it carries one.
fn credentials(headers: &HeaderMap) -> Result<Option<(String, String)>> {
    for name in [ACCESS_KEY, SECRET_KEY, "authorization"] {
        if headers.get_all(name).iter().count() > 1 {
            return Err(Error::invalid(format!("header {name} is given more than once")));
        }
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty());
    if let (Some(a), Some(s)) = (header(ACCESS_KEY), header(SECRET_KEY)) {
        return Ok(Some((a.to_string(), s.to_string())));
    }
    if let Some(basic) = header("authorization").and_then(|v| v.strip_prefix("Basic ")) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(|| Error::new(ErrorKind::Unauthenticated, "malformed basic authorization"))?;
        if let Some((a, s)) = decoded.split_once(':') {
            return Ok(Some((a.to_string(), s.to_string())));
        }
    }
    Ok(None)
}

/// Checks the keys of every request that carries some, counting failures (module doc).
pub async fn gate(State(s): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let keys = match credentials(request.headers()) {
        Ok(Some(keys)) => keys,
        Ok(None) => return next.run(request).await,
        Err(e) => return ApiError(e).into_response(),
    };
    let client = client_ip(&s, &request);
    match check_keys(&s, client, &keys.0, &keys.1) {
        Ok(_) => next.run(request).await,
        Err(refused) => refusal(refused),
    }
}

/// The account with these keys, if `client` may try them now; else why not.
pub fn check_keys<'a>(
    s: &'a AppState,
    client: IpAddr,
    access: &str,
    secret: &str,
) -> std::result::Result<&'a Account, Refused> {
    let now = s.clock.timestamp().millis();
    let configured = s.accounts.is_configured(access);
    let checked = s.limiter.check(client.into(), access, configured, now, || s.accounts.with_keys(access, secret));
    match checked {
        Err(Refused::Wrong) => {
            ::metrics::counter!(crate::metrics::AUTH_FAILURES).increment(1);
            tracing::info!(%client, "wrong keys");
        }
        Err(Refused::Limited(_)) => ::metrics::counter!(crate::metrics::AUTH_LIMITED).increment(1),
        Ok(_) => {}
    }
    checked
}

/// The answer to a refused key check: 403, or 429 with `Retry-After`.
pub fn refusal(refused: Refused) -> Response {
    match refused {
        Refused::Wrong => ApiError(wrong_keys()).into_response(),
        Refused::Limited(wait) => {
            too_many_requests("too many failed key checks from this client; wait before trying again", wait)
        }
    }
}

/// The client a request comes from: the peer, or, when the peer is one of
/// `vault.trusted_proxies`, the nearest address in `X-Forwarded-For` that is not one of them.
pub fn client_ip(s: &AppState, request: &Request) -> IpAddr {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    forwarded_client(&s.config.vault.trusted_proxies, peer, request.headers())
}

pub fn forwarded_client(trusted: &[IpAddr], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse().ok())
        .collect();
    hops.into_iter().rev().find(|hop| !trusted.contains(hop)).unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_trusted_proxies_are_believed_about_the_client() {
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 198.51.100.4, 10.0.0.5".parse().unwrap());
        assert_eq!(forwarded_client(&[proxy], proxy, &h), "198.51.100.4".parse::<IpAddr>().unwrap());
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(forwarded_client(&[proxy], stranger, &h), stranger, "an untrusted peer's header is ignored");
        assert_eq!(forwarded_client(&[], proxy, &h), proxy);
        assert_eq!(forwarded_client(&[proxy], proxy, &HeaderMap::new()), proxy);
    }
}
