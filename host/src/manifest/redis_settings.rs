//! `[redis]`: where Redis is (one node or a cluster's seeds), how many connections and
//! commands in flight the host may use, the key prefix, TLS files and credentials.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::{Deserialize, Deserializer};

use super::HumanDuration;

/// Whether `[redis] url` is one Redis or a Redis Cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// Several seed URLs mean a cluster; one URL is asked (`INFO cluster`) at start-up.
    #[default]
    Auto,
    Single,
    Cluster,
}

/// `url = "redis://a"` or `url = ["redis://a", "redis://b"]`; a list is kept as one string
/// with commas, the form `REDIS_URL` takes, so both reach [`redis_seeds`] alike.
fn one_or_many_urls<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Urls {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<Urls>::deserialize(d)? {
        None => None,
        Some(Urls::One(url)) => Some(url),
        Some(Urls::Many(urls)) => Some(urls.join(",")),
    })
}

/// The node URLs in a `[redis] url` or `REDIS_URL`: split at commas, blanks dropped.
pub fn redis_seeds(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// The Redis connection. Redis is used (for queues and kv) when `url` is set here or in the
/// `REDIS_URL` environment variable; otherwise both are embedded and in memory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// One node (`redis://host:6379`), or a Redis Cluster's seed nodes: a list, or one
    /// string with the URLs separated by commas (as `REDIS_URL` takes them).
    #[serde(default, deserialize_with = "one_or_many_urls")]
    pub url: Option<String>,
    /// `single`, `cluster`, or `auto` (the default): a cluster when `url` names several
    /// nodes or the first node says `cluster_enabled:1`.
    #[serde(default)]
    pub mode: RedisMode,
    /// Multiplexed connections for commands; on one node the host adds one for blocking
    /// reads, on a cluster each is one connection per master.
    #[serde(default = "defaults::redis_connections")]
    pub connections: u32,
    /// Hard cap on Redis commands in flight from this host.
    #[serde(default = "defaults::redis_max_in_flight")]
    pub max_in_flight: u32,
    /// How long a command may wait for one of those slots before failing `unavailable`.
    #[serde(default = "defaults::redis_acquire_timeout")]
    pub acquire_timeout: HumanDuration,
    #[serde(default = "defaults::redis_command_timeout")]
    pub command_timeout: HumanDuration,
    #[serde(default = "defaults::redis_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Replicas that must hold a write before it is answered (`WAIT`): an enqueue, a job's
    /// retry or burial, a kv write, a deploy. 0 (the default) answers at once, so a master
    /// that dies before replicating loses what it acknowledged last.
    #[serde(default)]
    pub replica_acks: u32,
    /// How long a write waits for those replicas before it fails `unavailable` (it was
    /// written, and may still reach them).
    #[serde(default = "defaults::redis_replica_timeout")]
    pub replica_timeout: HumanDuration,
    /// What every key and channel of this application starts with (`PREFIX:kv:...`), so
    /// that several applications (staging and production) can share one Redis.
    #[serde(default = "defaults::redis_prefix")]
    pub prefix: String,
    /// PEM file of the CA that signed the server's certificate (`rediss://` to a private
    /// CA); relative to the manifest's folder. Without it, the system's roots are trusted.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for a server that asks for one (mutual TLS).
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// The ACL user, when not in the URL.
    #[serde(default)]
    pub username: Option<String>,
    /// The name of the environment variable holding the password (never the password).
    #[serde(default)]
    pub password_env: Option<String>,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: None,
            mode: RedisMode::default(),
            connections: defaults::redis_connections(),
            max_in_flight: defaults::redis_max_in_flight(),
            acquire_timeout: defaults::redis_acquire_timeout(),
            command_timeout: defaults::redis_command_timeout(),
            connect_timeout: defaults::redis_connect_timeout(),
            replica_acks: 0,
            replica_timeout: defaults::redis_replica_timeout(),
            prefix: defaults::redis_prefix(),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            username: None,
            password_env: None,
        }
    }
}

impl RedisSettings {
    /// Checks the URLs, counts and prefix, and resolves the TLS files against `base` (the
    /// manifest's folder).
    pub(super) fn validate(&mut self, base: &Path) -> Result<()> {
        if let Some(url) = &self.url {
            let seeds = redis_seeds(url);
            if seeds.is_empty() {
                bail!(
                    "in [redis]: field `url` is empty: give a redis://, rediss:// or unix:// URL"
                );
            }
            for seed in &seeds {
                let shown = redact_redis_urls(seed);
                if !(seed.starts_with("redis://")
                    || seed.starts_with("rediss://")
                    || seed.starts_with("unix://")
                    || seed.starts_with("redis+unix://"))
                {
                    bail!(
                        "in [redis]: field `url`: {shown:?} must start with redis://, rediss:// or unix://"
                    );
                }
            }
            if seeds.len() > 1 && self.mode == RedisMode::Single {
                bail!(
                    "in [redis]: `mode = \"single\"` takes one URL, and `url` names {}; \
                     set `mode = \"cluster\"` (or leave it out) for a cluster's seed nodes",
                    seeds.len()
                );
            }
            if seeds.len() > 1
                && seeds
                    .iter()
                    .any(|s| s.starts_with("unix:") || s.starts_with("redis+unix:"))
            {
                bail!(
                    "in [redis]: field `url`: a cluster's seed nodes are redis:// or rediss:// URLs, not unix sockets"
                );
            }
        }
        if self.replica_acks > 0 && self.replica_timeout.0 >= self.command_timeout.0 {
            bail!(
                "in [redis]: `replica_timeout` ({}) must be shorter than `command_timeout` ({})",
                self.replica_timeout,
                self.command_timeout
            );
        }
        if self.connections == 0 || self.max_in_flight == 0 {
            bail!("in [redis]: `connections` and `max_in_flight` must be greater than zero");
        }
        check_redis_prefix(&self.prefix)
            .map_err(|e| anyhow::anyhow!("in [redis]: field `prefix`: {e}"))?;
        self.resolve_files(base)
    }

    /// Anchors the TLS files at `base` (the manifest's folder) and checks that each exists,
    /// and that a client certificate comes with its key.
    fn resolve_files(&mut self, base: &Path) -> Result<()> {
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            bail!(
                "in [redis]: fields `client_cert_file` and `client_key_file` go together: give both or neither"
            );
        }
        for (field, file) in [
            ("ca_file", &mut self.ca_file),
            ("client_cert_file", &mut self.client_cert_file),
            ("client_key_file", &mut self.client_key_file),
        ] {
            if let Some(path) = file {
                let resolved = base.join(&*path);
                if !resolved.is_file() {
                    bail!(
                        "in [redis]: field `{field}`: file `{}` does not exist",
                        resolved.display()
                    );
                }
                *path = resolved;
            }
        }
        Ok(())
    }

    /// Whether the connection is set up with files of its own (a CA or a client
    /// certificate) rather than the system's trust roots alone.
    pub fn has_tls_files(&self) -> bool {
        self.ca_file.is_some() || self.client_cert_file.is_some()
    }
}

/// A key prefix is 1 to 64 of `A-Z a-z 0-9 - _ . :`: no braces, which would change the hash
/// slot of every key, and nothing a `KEYS`/`SCAN` pattern would read as a wildcard.
pub fn check_redis_prefix(prefix: &str) -> Result<(), String> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{prefix:?} must be 1 to 64 of A-Z, a-z, 0-9, '-', '_', '.' and ':'"
        ))
    }
}

mod defaults {
    use super::HumanDuration;
    use std::time::Duration;

    pub fn redis_connections() -> u32 {
        2
    }
    pub fn redis_max_in_flight() -> u32 {
        512
    }
    pub fn redis_acquire_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(1))
    }
    pub fn redis_command_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(5))
    }
    pub fn redis_connect_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(2))
    }
    pub fn redis_replica_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(1))
    }
    pub fn redis_prefix() -> String {
        "llmchat".to_string()
    }
}

/// `text` with the password of any Redis URL in it replaced by `***`: for logs and errors.
pub fn redact_redis_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme) = rest.find("://") {
        let (head, tail) = rest.split_at(scheme + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let (authority, after) = tail.split_at(end);
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_left_out_of_urls_wherever_they_appear() {
        assert_eq!(
            redact_redis_urls("redis://user:secret@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(
            redact_redis_urls("failed: rediss://:pw@h:1 and \"redis://a:b@c\""),
            "failed: rediss://***@h:1 and \"redis://***@c\""
        );
        assert_eq!(
            redact_redis_urls("unix:///tmp/r.sock"),
            "unix:///tmp/r.sock"
        );
        assert_eq!(redact_redis_urls("no url here"), "no url here");
    }
}
