//! Account authentication. Kerberos agents send `X-Kerberos-Storage-AccessKey` and
//! `-SecretAccessKey`; API clients may use HTTP Basic with the same pair.

use crate::config::AccountConfig;
use axum::http::HeaderMap;
use base64::Engine;
use osprey_core::{Error, ErrorKind, Result};
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

    /// The account whose credentials the request carries.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<&Account> {
        let (access, secret) = credentials(headers)?;
        self.with_keys(&access, &secret)
            .ok_or_else(|| Error::new(ErrorKind::PermissionDenied, "access key or secret key is wrong"))
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

fn credentials(headers: &HeaderMap) -> Result<(String, String)> {
    for name in [ACCESS_KEY, SECRET_KEY, "authorization"] {
        if headers.get_all(name).iter().count() > 1 {
            return Err(Error::invalid(format!("header {name} is given more than once")));
        }
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty());
    if let (Some(a), Some(s)) = (header(ACCESS_KEY), header(SECRET_KEY)) {
        return Ok((a.to_string(), s.to_string()));
    }
    if let Some(basic) = header("authorization").and_then(|v| v.strip_prefix("Basic ")) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(|| Error::new(ErrorKind::Unauthenticated, "malformed basic authorization"))?;
        if let Some((a, s)) = decoded.split_once(':') {
            return Ok((a.to_string(), s.to_string()));
        }
    }
    Err(Error::new(
        ErrorKind::Unauthenticated,
        "missing credentials: send X-Kerberos-Storage-AccessKey and X-Kerberos-Storage-SecretAccessKey",
    ))
}
