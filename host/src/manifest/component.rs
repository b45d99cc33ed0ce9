//! A component's settings: [`ComponentConfig`] as written (a `[component.NAME]` table, the
//! component part of a deploy's spec, what `llmchat deploy` sends), and [`ComponentSpec`],
//! the same settings checked, with every default filled in, as the host runs them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use serde::{Deserialize, Deserializer, Serialize};

use super::{ByteSize, HumanDuration, check_name, check_outbound_host};

/// Largest memory cap a component may ask for; beyond it the pool reservation gets silly.
pub const MAX_MEMORY_LIMIT: ByteSize = ByteSize(4 << 30);
/// Smallest memory cap that can hold a Rust guest's stack and data segment.
pub const MIN_MEMORY_LIMIT: ByteSize = ByteSize(1 << 20);
pub const MAX_INSTANCES: u32 = 10_000;
/// Fewer handles than this and a component cannot even hold its own streams.
pub const MIN_RESOURCES: u32 = 16;
/// wasmtime's own default table cap; past it a handle bomb only costs the host more.
pub const MAX_RESOURCES: u32 = 1_000_000;

const DEFAULT_MEMORY_LIMIT: ByteSize = ByteSize::mib(64);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MAX_INSTANCES: u32 = 32;
const DEFAULT_MAX_RESOURCES: u32 = 10_000;

/// A component's settings as written. Every field is optional, so that a redeploy names only
/// what changes ([`ComponentConfig::merged_with`]); [`ComponentConfig::validate`] fills in the
/// defaults and checks each field by the same rules wherever the settings come from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentConfig {
    /// The `.wasm` file, relative to the manifest. A deploy sends the bytes instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<ByteSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_resources: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_outbound_hosts: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<BTreeMap<String, ConfigValue>>,
    /// Values read through the `config` interface like `config`'s, but taken from the
    /// host's environment or a file when the manifest is loaded, and never shown. Only a
    /// manifest has them: a deploy cannot name the host's variables or files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<BTreeMap<String, SecretSource>>,
}

/// Where a secret comes from: `{ env = "VAR" }` or `{ file = "/run/secrets/x" }` (relative
/// to the manifest; one trailing newline is dropped).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

impl SecretSource {
    fn read(&self, base: &Path) -> Result<Secret> {
        let value = match (&self.env, &self.file) {
            (Some(var), None) => std::env::var(var).map_err(|_| {
                anyhow::anyhow!("environment variable `{var}` is not set (or not UTF-8)")
            })?,
            (None, Some(file)) => {
                let path = base.join(file);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    anyhow::anyhow!("file `{}` cannot be read: {e}", path.display())
                })?;
                text.strip_suffix('\n').unwrap_or(&text).to_string()
            }
            _ => bail!("give `env` or `file`, one of them"),
        };
        Ok(Secret(value))
    }
}

/// A secret's value: handed to the component through the `config` interface, and printed
/// as `***` everywhere else.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// One `config` value as the component reads it through the `config` interface: a string as
/// it is, any other value (number, array, table) as its JSON text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ConfigValue(pub String);

impl<'de> Deserialize<'de> for ConfigValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(ConfigValue(match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        }))
    }
}

/// One component, checked, with its source resolved to an absolute path.
#[derive(Debug, Clone)]
pub struct ComponentSpec {
    pub name: String,
    /// Absolute path of the `.wasm` file.
    pub source: PathBuf,
    /// Cap on all linear memories and tables of one instance together.
    pub memory_limit: ByteSize,
    /// Wall-clock limit of one invocation.
    pub timeout: Duration,
    /// How many instances of this component may run at once.
    pub max_instances: u32,
    /// Resource handles one instance may hold at once; each costs the host a table entry
    /// and what the resource owns, which also counts against `memory_limit`.
    pub max_resources: u32,
    /// Hosts the component may reach with outgoing `wasi:http` requests, as `scheme://host:port`.
    pub allowed_outbound_hosts: Vec<String>,
    /// Environment variables the component sees; none unless granted here.
    pub environment: BTreeMap<String, String>,
    /// The kv namespace the component reads and writes: its own name unless the manifest
    /// makes several components share one (e.g. `chat` and its `summarizer`).
    pub kv_namespace: String,
    /// The component's own settings, readable through the `config` interface. Non-string
    /// values are handed over as JSON text.
    pub config: BTreeMap<String, String>,
    /// Read through the `config` interface too; from the manifest only (see
    /// [`ComponentConfig::secrets`]).
    pub secrets: BTreeMap<String, Secret>,
}

impl ComponentConfig {
    /// The settings that reproduce `spec` exactly, every field set; the file stays with the
    /// caller (`source` is left out).
    pub fn of(spec: &ComponentSpec) -> ComponentConfig {
        ComponentConfig {
            source: None,
            memory_limit: Some(spec.memory_limit),
            timeout: Some(HumanDuration(spec.timeout)),
            max_instances: Some(spec.max_instances),
            max_resources: Some(spec.max_resources),
            allowed_outbound_hosts: Some(spec.allowed_outbound_hosts.clone()),
            environment: Some(spec.environment.clone()),
            kv_namespace: Some(spec.kv_namespace.clone()),
            config: Some(
                spec.config
                    .iter()
                    .map(|(k, v)| (k.clone(), ConfigValue(v.clone())))
                    .collect(),
            ),
            // Never written out: a record or a deploy spec holds no secret.
            secrets: None,
        }
    }

    /// `self` with every field `newer` sets replaced: a redeploy keeps what it does not
    /// mention.
    pub fn merged_with(&self, newer: &ComponentConfig) -> ComponentConfig {
        fn pick<T: Clone>(newer: &Option<T>, older: &Option<T>) -> Option<T> {
            newer.as_ref().or(older.as_ref()).cloned()
        }
        ComponentConfig {
            source: pick(&newer.source, &self.source),
            memory_limit: newer.memory_limit.or(self.memory_limit),
            timeout: newer.timeout.or(self.timeout),
            max_instances: newer.max_instances.or(self.max_instances),
            max_resources: newer.max_resources.or(self.max_resources),
            allowed_outbound_hosts: pick(
                &newer.allowed_outbound_hosts,
                &self.allowed_outbound_hosts,
            ),
            environment: pick(&newer.environment, &self.environment),
            kv_namespace: pick(&newer.kv_namespace, &self.kv_namespace),
            config: pick(&newer.config, &self.config),
            secrets: pick(&newer.secrets, &self.secrets),
        }
    }

    /// Component `name` of a manifest in folder `base`, which anchors a relative `source`.
    pub(super) fn validate(self, name: &str, base: &Path) -> Result<ComponentSpec> {
        let Some(source) = &self.source else {
            bail!("missing field `source`");
        };
        let source = if source.is_absolute() {
            source.clone()
        } else {
            base.join(source)
        };
        let mut secrets = BTreeMap::new();
        for (key, from) in self.secrets.iter().flatten() {
            if self.config.as_ref().is_some_and(|c| c.contains_key(key)) {
                bail!("field `secrets`: `{key}` is in `config` as well; give it once");
            }
            let value = from
                .read(base)
                .map_err(|e| anyhow::anyhow!("field `secrets`: `{key}`: {e}"))?;
            secrets.insert(key.clone(), value);
        }
        let mut spec = self.resolve(name, source)?;
        spec.secrets = secrets;
        Ok(spec)
    }

    /// Deployed component `name`, whose bytes the host keeps at `source`; the settings name
    /// no file of their own.
    pub fn validate_deployed(self, name: &str, source: PathBuf) -> Result<ComponentSpec> {
        if self.secrets.is_some() {
            bail!(
                "field `secrets`: secrets come from the host's manifest, not from a deploy (a deployed version of a manifest component keeps the manifest's)"
            );
        }
        if let Some(path) = &self.source {
            bail!(
                "field `source`: {:?} is not allowed in a deploy, which sends the component's bytes",
                path.display().to_string()
            );
        }
        self.resolve(name, source)
    }

    fn resolve(self, name: &str, source: PathBuf) -> Result<ComponentSpec> {
        check_name(name).map_err(|e| anyhow::anyhow!("component name {e}"))?;
        let kv_namespace = self.kv_namespace.unwrap_or_else(|| name.to_string());
        check_name(&kv_namespace).map_err(|e| anyhow::anyhow!("field `kv_namespace`: {e}"))?;
        if !source.is_file() {
            bail!(
                "field `source`: component file `{}` does not exist",
                source.display()
            );
        }
        let memory_limit = self.memory_limit.unwrap_or(DEFAULT_MEMORY_LIMIT);
        if memory_limit < MIN_MEMORY_LIMIT || memory_limit > MAX_MEMORY_LIMIT {
            bail!(
                "field `memory_limit`: {memory_limit} is outside {MIN_MEMORY_LIMIT}..={MAX_MEMORY_LIMIT}"
            );
        }
        let timeout = self.timeout.map_or(DEFAULT_TIMEOUT, |t| t.0);
        if timeout.is_zero() {
            bail!("field `timeout`: must be greater than zero");
        }
        let max_resources = self.max_resources.unwrap_or(DEFAULT_MAX_RESOURCES);
        if !(MIN_RESOURCES..=MAX_RESOURCES).contains(&max_resources) {
            bail!(
                "field `max_resources`: {max_resources} is outside {MIN_RESOURCES}..={MAX_RESOURCES}"
            );
        }
        let max_instances = self.max_instances.unwrap_or(DEFAULT_MAX_INSTANCES);
        if !(1..=MAX_INSTANCES).contains(&max_instances) {
            bail!("field `max_instances`: {max_instances} is outside 1..={MAX_INSTANCES}");
        }
        let allowed_outbound_hosts = self.allowed_outbound_hosts.unwrap_or_default();
        for host in &allowed_outbound_hosts {
            check_outbound_host(host)
                .map_err(|e| anyhow::anyhow!("field `allowed_outbound_hosts`: {e}"))?;
        }
        Ok(ComponentSpec {
            name: name.to_string(),
            source,
            memory_limit,
            timeout,
            max_instances,
            max_resources,
            allowed_outbound_hosts,
            environment: self.environment.unwrap_or_default(),
            kv_namespace,
            config: self
                .config
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect(),
            secrets: BTreeMap::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wasm_file() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wasm");
        std::fs::write(&path, b"\0asm").unwrap();
        (dir, path)
    }

    #[test]
    fn config_values_other_than_strings_become_json_text() {
        let config: ComponentConfig =
            toml::from_str("[config]\ngreeting = \"hi\"\nn = 5\nagents = [{ id = \"general\" }]\n")
                .unwrap();
        let json: ComponentConfig = serde_json::from_str(
            r#"{"config": {"greeting": "hi", "n": 5, "agents": [{"id": "general"}]}}"#,
        )
        .unwrap();
        assert_eq!(config, json, "TOML and JSON give the same settings");
        let values = config.config.unwrap();
        assert_eq!(values["greeting"], ConfigValue("hi".into()));
        assert_eq!(values["n"], ConfigValue("5".into()));
        assert_eq!(
            values["agents"],
            ConfigValue(r#"[{"id":"general"}]"#.into())
        );
    }

    #[test]
    fn a_spec_read_back_from_its_settings_is_the_same() {
        let (_dir, path) = wasm_file();
        let config: ComponentConfig = toml::from_str(
            "memory_limit = \"32MiB\"\ntimeout = \"1500ms\"\nallowed_outbound_hosts = [\"http://127.0.0.1:1\"]\nenvironment = { A = \"1\" }\n[config]\nk = \"v\"\n",
        )
        .unwrap();
        let spec = config.validate_deployed("c", path.clone()).unwrap();
        let again = ComponentConfig::of(&spec)
            .validate_deployed("c", path)
            .unwrap();
        assert_eq!(format!("{spec:?}"), format!("{again:?}"));
        assert_eq!(spec.timeout, Duration::from_millis(1500));
        assert_eq!(spec.environment["A"], "1");
    }

    #[test]
    fn a_redeploy_keeps_what_it_does_not_mention() {
        let v1 = ComponentConfig {
            memory_limit: Some(ByteSize::mib(64)),
            timeout: Some(HumanDuration(Duration::from_secs(5))),
            ..Default::default()
        };
        let v2 = v1.merged_with(&ComponentConfig {
            timeout: Some(HumanDuration(Duration::from_secs(9))),
            ..Default::default()
        });
        assert_eq!(v2.memory_limit, Some(ByteSize::mib(64)));
        assert_eq!(v2.timeout, Some(HumanDuration(Duration::from_secs(9))));
    }

    #[test]
    fn a_deploy_names_no_file_and_a_manifest_must() {
        let (dir, path) = wasm_file();
        let with_source = ComponentConfig {
            source: Some("a.wasm".into()),
            ..Default::default()
        };
        let e = with_source
            .clone()
            .validate_deployed("c", path)
            .unwrap_err();
        assert!(e.to_string().contains("field `source`"), "{e}");
        let spec = with_source.validate("c", dir.path()).unwrap();
        assert_eq!(spec.source, dir.path().join("a.wasm"));
        let e = ComponentConfig::default()
            .validate("c", dir.path())
            .unwrap_err();
        assert_eq!(e.to_string(), "missing field `source`");
    }

    #[test]
    fn each_limit_is_checked_by_one_rule() {
        let (_dir, path) = wasm_file();
        let check = |config: ComponentConfig| {
            config
                .validate_deployed("c", path.clone())
                .unwrap_err()
                .to_string()
        };
        let e = check(ComponentConfig {
            memory_limit: Some(ByteSize(1024)),
            ..Default::default()
        });
        assert!(e.contains("memory_limit") && e.contains("1KiB"), "{e}");
        let e = check(ComponentConfig {
            max_instances: Some(0),
            ..Default::default()
        });
        assert!(e.contains("max_instances"), "{e}");
        let e = check(ComponentConfig {
            allowed_outbound_hosts: Some(vec!["example.com".into()]),
            ..Default::default()
        });
        assert!(
            e.contains("allowed_outbound_hosts") && e.contains("example.com"),
            "{e}"
        );
        let e = check(ComponentConfig {
            kv_namespace: Some("Chat".into()),
            ..Default::default()
        });
        assert!(e.contains("kv_namespace"), "{e}");
    }

    #[test]
    fn secrets_come_from_the_environment_or_a_file_and_print_as_stars() {
        let (dir, _) = wasm_file();
        std::fs::write(dir.path().join("token"), "from-a-file\n").unwrap();
        let config: ComponentConfig = toml::from_str(
            "source = \"a.wasm\"\n[secrets]\npath = { env = \"PATH\" }\ntoken = { file = \"token\" }\n",
        )
        .unwrap();
        let spec = config.clone().validate("c", dir.path()).unwrap();
        assert_eq!(spec.secrets["token"].expose(), "from-a-file");
        assert_eq!(
            spec.secrets["path"].expose(),
            std::env::var("PATH").unwrap()
        );
        let shown = format!("{spec:?}");
        assert!(
            !shown.contains("from-a-file") && shown.contains("***"),
            "{shown}"
        );
        assert_eq!(
            ComponentConfig::of(&spec).secrets,
            None,
            "never written out"
        );

        let e = config
            .validate_deployed("c", dir.path().join("a.wasm"))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("field `secrets`: secrets come from the host's manifest"),
            "{e}"
        );
        let read = |text: &str| {
            toml::from_str::<ComponentConfig>(text)
                .unwrap()
                .validate("c", dir.path())
                .unwrap_err()
                .to_string()
        };
        let e =
            read("source = \"a.wasm\"\n[secrets]\nk = { env = \"LLMCHAT_TEST_UNSET_SECRET\" }\n");
        assert_eq!(
            e,
            "field `secrets`: `k`: environment variable `LLMCHAT_TEST_UNSET_SECRET` is not set (or not UTF-8)"
        );
        let e = read("source = \"a.wasm\"\n[secrets]\nk = { file = \"nope\" }\n");
        assert!(
            e.starts_with("field `secrets`: `k`: file `") && e.contains("nope` cannot be read"),
            "{e}"
        );
        let e = read("source = \"a.wasm\"\n[secrets]\nk = {}\n");
        assert_eq!(e, "field `secrets`: `k`: give `env` or `file`, one of them");
        let e =
            read("source = \"a.wasm\"\n[config]\nk = \"v\"\n[secrets]\nk = { file = \"token\" }\n");
        assert_eq!(
            e,
            "field `secrets`: `k` is in `config` as well; give it once"
        );
    }
}
