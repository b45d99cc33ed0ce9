//! The `redis::Client` the pool's connections come from: the URL, credentials from the
//! manifest or the environment, and TLS with a private CA or a client certificate.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::{
    ClientTlsConfig, ConnectionInfo, IntoConnectionInfo, ProtocolVersion, PushInfo, TlsCertificates,
};

use super::pushes::Router;

pub use crate::manifest::redact_redis_urls as redact;
use crate::manifest::{RedisSettings, redis_seeds};

/// `url`'s connection info with `settings`' credentials. Errors name the URL without its
/// password.
fn connection_info(settings: &RedisSettings, url: &str) -> Result<ConnectionInfo> {
    let shown = redact(url);
    let info = url
        .into_connection_info()
        .map_err(|e| anyhow::anyhow!("invalid Redis URL {shown:?}: {}", redact(&e.to_string())))?;
    let mut redis_settings = info.redis_settings().clone();
    if let Some(user) = &settings.username {
        redis_settings = redis_settings.set_username(user);
    }
    if let Some(password) = password(settings)? {
        redis_settings = redis_settings.set_password(password);
    }
    Ok(info.set_redis_settings(redis_settings))
}

/// The password from `[redis] password_env`, if one is named.
fn password(settings: &RedisSettings) -> Result<Option<String>> {
    let Some(var) = &settings.password_env else {
        return Ok(None);
    };
    std::env::var(var).map(Some).with_context(|| {
        format!("[redis] password_env names `{var}`, which is not set (or not UTF-8)")
    })
}

/// The CA and client certificate of `[redis]`, when it names files; they need TLS URLs.
fn tls_files(settings: &RedisSettings, urls: &[&str]) -> Result<Option<TlsCertificates>> {
    if !settings.has_tls_files() {
        return Ok(None);
    }
    if let Some(plain) = urls.iter().find(|u| !u.starts_with("rediss://")) {
        bail!(
            "[redis] ca_file and client_cert_file need a TLS URL (rediss://), not {:?}",
            redact(plain)
        );
    }
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("reading `{}` ([redis])", path.display()))
    };
    let root_cert = settings.ca_file.as_deref().map(read).transpose()?;
    let client_tls = match (&settings.client_cert_file, &settings.client_key_file) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        _ => None,
    };
    Ok(Some(TlsCertificates {
        client_tls,
        root_cert,
    }))
}

/// The client for one node at `url` with `settings`' credentials and TLS files.
pub(super) fn client(settings: &RedisSettings, url: &str) -> Result<redis::Client> {
    let shown = redact(url);
    let info = connection_info(settings, url)?;
    let built = match tls_files(settings, &[url])? {
        None => redis::Client::open(info),
        Some(certificates) => redis::Client::build_with_tls(info, certificates),
    };
    built.map_err(|e| anyhow::anyhow!("Redis URL {shown:?}: {}", redact(&e.to_string())))
}

/// The client for the cluster whose seed nodes `urls` names (comma-separated). With a
/// `router` it speaks RESP3, so that shard-channel messages arrive as pushes handed to it:
/// that client is for the subscriptions only, and commands use one without.
pub(super) fn cluster_client(
    settings: &RedisSettings,
    urls: &str,
    router: Option<Arc<Router>>,
) -> Result<ClusterClient> {
    let seeds = redis_seeds(urls);
    let infos = seeds
        .iter()
        .map(|url| connection_info(settings, url))
        .collect::<Result<Vec<_>>>()?;
    let mut builder = ClusterClientBuilder::new(infos);
    if let Some(router) = router {
        builder =
            builder
                .use_protocol(ProtocolVersion::RESP3)
                .push_sender(move |push: PushInfo| {
                    router.route(push);
                    Ok::<(), std::convert::Infallible>(())
                });
    }
    builder = builder
        .connection_timeout(settings.connect_timeout.0)
        .response_timeout(settings.command_timeout.0)
        .retries(4)
        .min_retry_wait(50)
        .max_retry_wait(1000);
    if let Some(user) = &settings.username {
        builder = builder.username(user);
    }
    if let Some(password) = password(settings)? {
        builder = builder.password(password);
    }
    if let Some(certificates) = tls_files(settings, &seeds)? {
        builder = builder.certs(certificates);
    }
    builder.build().map_err(|e| {
        anyhow::anyhow!(
            "Redis Cluster seeds {:?}: {}",
            redact(urls),
            redact(&e.to_string())
        )
    })
}

/// Whether the node at `url` runs in cluster mode (`INFO cluster`), asked once within the
/// connect timeout.
pub(super) async fn cluster_enabled(settings: &RedisSettings, url: &str) -> Result<bool> {
    let client = client(settings, url)?;
    let ask = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("INFO")
            .arg("cluster")
            .query_async::<String>(&mut conn)
            .await
    };
    let info = crate::timers::timeout(settings.connect_timeout.0 * 2, ask)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {:?}", settings.connect_timeout.0 * 2))?
        .map_err(|e| anyhow::anyhow!("{}", redact(&e.to_string())))?;
    Ok(info.lines().any(|l| l.trim() == "cluster_enabled:1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_files_need_a_tls_url_and_a_password_env_must_be_set() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, b"").unwrap();
        let settings = RedisSettings {
            ca_file: Some(ca),
            ..RedisSettings::default()
        };
        let e = client(&settings, "redis://:secret@127.0.0.1:1").unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("need a TLS URL (rediss://)"), "{e}");
        assert!(!e.contains("secret"), "{e}");

        let settings = RedisSettings {
            password_env: Some("LLMCHAT_TEST_UNSET_REDIS_PASSWORD".into()),
            ..RedisSettings::default()
        };
        let e = format!(
            "{:#}",
            client(&settings, "redis://127.0.0.1:1").unwrap_err()
        );
        assert!(
            e.contains("`LLMCHAT_TEST_UNSET_REDIS_PASSWORD`, which is not set"),
            "{e}"
        );
    }
}
