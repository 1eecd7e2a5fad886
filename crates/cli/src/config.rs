//! The whole configuration: one TOML file holding every role's section, every key overridable by
//! an `OSPREY_*` environment variable (`OSPREY_VAULT__LISTEN=0.0.0.0:8080` sets `vault.listen`;
//! `__` separates levels). Each section's type is its role's own (`osprey_vault::Config`, ...);
//! this file only gathers them, loads them, and hands each role the sections it reads.
//!
//! Unknown keys are refused, so a typo never silently falls back to a default. Every value a role
//! would refuse at start is refused here, when the file is read.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use osprey_core::{Error, Result};
use osprey_store::ProviderConfig;
use serde::{Deserialize, Serialize};

pub const ENV_PREFIX: &str = "OSPREY_";
/// `OSPREY_*` variables that configure the command line, not the config: `OSPREY_LOG` (log
/// filter) and `OSPREY_CONFIG_FILE` (the `--config` path).
const ENV_NOT_CONFIG: [&str; 2] = ["log", "config_file"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where local state lives: the SQLite database, the embedded bus log, local storage.
    pub data_dir: PathBuf,
    pub vault: osprey_vault::Config,
    pub bus: osprey_bus::Config,
    /// Storage providers by name. Accounts name the ones they may write to.
    pub providers: BTreeMap<String, ProviderConfig>,
    pub detect: osprey_detect::Config,
    /// Model groups, each in its own consumer group (`[[models]]`); none: `[detect]` alone.
    pub models: Vec<osprey_worker::ModelGroup>,
    pub worker: osprey_worker::Config,
    pub notify: osprey_notify::Config,
    pub agent: osprey_agent::Config,
    /// Where `osprey worker`, `agent` and `notify` serve Prometheus `/metrics`; off when unset.
    /// (The vault serves its own on `vault.listen`.)
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("osprey-data"),
            vault: Default::default(),
            bus: Default::default(),
            providers: ProviderConfig::defaults(),
            detect: Default::default(),
            models: Vec::new(),
            worker: Default::default(),
            notify: Default::default(),
            agent: Default::default(),
            metrics_listen: None,
        }
    }
}

impl Config {
    /// Loads defaults, then the TOML file (if given), then `OSPREY_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(Error::invalid(format!("config file {} does not exist", file.display())));
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(Env::prefixed(ENV_PREFIX).ignore(&ENV_NOT_CONFIG).split("__"));
        let config: Config =
            figment.extract().map_err(|e| Error::invalid(format!("invalid config: {}", describe(e))))?;
        config.validate()?;
        Ok(config)
    }

    /// Every section's own checks, then those across sections.
    pub fn validate(&self) -> Result<()> {
        self.vault_setup().validate()?;
        self.bus.validate()?;
        self.detect.validate()?;
        osprey_worker::config::validate_groups(&self.models)?;
        self.worker.validate()?;
        self.notify.validate()?;
        self.agent.validate()
    }

    /// What the vault reads: `[vault]`, `[providers]`, the data directory.
    pub fn vault_setup(&self) -> osprey_vault::Setup {
        osprey_vault::Setup {
            data_dir: self.data_dir.clone(),
            vault: self.vault.clone(),
            providers: self.providers.clone(),
            model_groups: match self.models.is_empty() {
                true => vec![osprey_core::DEFAULT_MODEL_GROUP.into()],
                false => self.models.iter().map(|m| m.name.clone()).collect(),
            },
        }
    }

    /// What a worker reads: `[worker]` and `[detect]`, the single group when there are no
    /// `[[models]]`, else the first group.
    pub fn worker_setup(&self) -> osprey_worker::Setup {
        self.worker_setups().remove(0)
    }

    /// One worker loop per model group (`[[models]]`), or the single `[detect]` one.
    pub fn worker_setups(&self) -> Vec<osprey_worker::Setup> {
        osprey_worker::setups(&self.worker, &self.detect, &self.models)
    }
}

/// Names the offending key and where it came from, e.g.
/// `unknown field `listn` for key "vault.listn" in osprey.toml`.
fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let origin = e.metadata.as_ref().and_then(|m| m.source.as_ref()).map(|s| s.to_string());
            let mut line = e.kind.to_string();
            if !key.is_empty() {
                line.push_str(&format!(" for key {key:?}"));
            }
            if let Some(origin) = origin {
                line.push_str(&format!(" in {origin}"));
            } else if let Some(m) = &e.metadata {
                line.push_str(&format!(" in {}", m.name));
            }
            line
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
// figment's `Jail` closures return figment's own error type, whose size is not ours to choose.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;
    use osprey_bus::BusKind;

    #[test]
    fn defaults_are_valid() {
        Jail::expect_with(|_| {
            let c = Config::load(None).unwrap();
            assert_eq!(c.bus.kind, BusKind::Embedded);
            assert!(c.vault_setup().database_url().ends_with("osprey-data/osprey.db"));
            assert_eq!(
                c.providers["local"].local_path("local", &c.data_dir),
                PathBuf::from("osprey-data/storage/local")
            );
            Ok(())
        });
    }

    #[test]
    fn file_then_env_override() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "osprey.toml",
                r#"
                data_dir = "/var/lib/osprey"
                [vault]
                listen = "0.0.0.0:9000"
                [[vault.accounts]]
                name = "alice"
                access_key = "AK"
                secret_key = "secret-secret"
                "#,
            )?;
            jail.set_env("OSPREY_VAULT__MAX_UPLOAD_BYTES", "1000");
            jail.set_env("OSPREY_BUS__KIND", "kafka");
            jail.set_env("OSPREY_BUS__KAFKA__BROKERS", "k1:9092");
            jail.set_env("OSPREY_DETECT__SAMPLING", "1");
            let c = Config::load(Some(Path::new("osprey.toml"))).unwrap();
            assert_eq!(c.vault.listen.port(), 9000);
            assert_eq!(c.vault.max_upload_bytes, 1000);
            assert_eq!(c.bus.kind, BusKind::Kafka);
            assert_eq!(c.bus.kafka.brokers, "k1:9092");
            assert_eq!(c.detect.sampling, osprey_media::Sampling::Fps(1.0));
            assert_eq!(c.vault.accounts[0].name, "alice");
            Ok(())
        });
    }

    #[test]
    fn unknown_key_is_named() {
        Jail::expect_with(|jail| {
            jail.create_file("osprey.toml", "[vault]\nlistn = \"0.0.0.0:1\"\n")?;
            let err = Config::load(Some(Path::new("osprey.toml"))).unwrap_err().to_string();
            assert!(err.contains("listn") && err.contains("vault.listn"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_env_key_is_named() {
        Jail::expect_with(|jail| {
            jail.set_env("OSPREY_VAULT__NOPE", "1");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("vault.nope"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn command_line_variables_are_not_config_keys() {
        Jail::expect_with(|jail| {
            jail.set_env("OSPREY_LOG", "debug");
            jail.set_env("OSPREY_CONFIG_FILE", "/nowhere.toml");
            Config::load(None).unwrap();
            Ok(())
        });
    }

    #[test]
    fn bad_value_is_named() {
        Jail::expect_with(|jail| {
            jail.set_env("OSPREY_VAULT__LISTEN", "not-an-address");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("vault.listen"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn account_with_unknown_provider_is_refused() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "osprey.toml",
                "[[vault.accounts]]\nname='a'\naccess_key='k'\nsecret_key='12345678'\nproviders=['s3']\n",
            )?;
            let err = Config::load(Some(Path::new("osprey.toml"))).unwrap_err().to_string();
            assert!(err.contains("unknown provider \"s3\""), "{err}");
            Ok(())
        });
    }
}
