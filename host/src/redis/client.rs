//! The `redis::Client` the pool's connections come from: the URL, credentials from the
//! manifest or the environment, and TLS with a private CA or a client certificate.

use anyhow::{Context, Result, bail};
use redis::{ClientTlsConfig, IntoConnectionInfo, TlsCertificates};

use crate::manifest::RedisSettings;

/// The client for `url` with `settings`' credentials and TLS files. Errors name the URL
/// without its password.
pub(super) fn client(settings: &RedisSettings, url: &str) -> Result<redis::Client> {
    let shown = redact(url);
    let mut info = url
        .into_connection_info()
        .map_err(|e| anyhow::anyhow!("invalid Redis URL {shown:?}: {}", redact(&e.to_string())))?;
    let mut redis_settings = info.redis_settings().clone();
    if let Some(user) = &settings.username {
        redis_settings = redis_settings.set_username(user);
    }
    if let Some(var) = &settings.password_env {
        let password = std::env::var(var).with_context(|| {
            format!("[redis] password_env names `{var}`, which is not set (or not UTF-8)")
        })?;
        redis_settings = redis_settings.set_password(password);
    }
    info = info.set_redis_settings(redis_settings);
    if !settings.has_tls_files() {
        return redis::Client::open(info)
            .map_err(|e| anyhow::anyhow!("Redis URL {shown:?}: {}", redact(&e.to_string())));
    }
    if !url.starts_with("rediss://") {
        bail!("[redis] ca_file and client_cert_file need a TLS URL (rediss://), not {shown:?}");
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
    redis::Client::build_with_tls(
        info,
        TlsCertificates {
            client_tls,
            root_cert,
        },
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "Redis URL {shown:?} with the [redis] TLS files: {}",
            redact(&e.to_string())
        )
    })
}

/// `text` with the password of any Redis URL in it replaced by `***`: for logs and errors.
pub fn redact(text: &str) -> String {
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
            redact("redis://user:secret@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(
            redact("failed: rediss://:pw@h:1 and \"redis://a:b@c\""),
            "failed: rediss://***@h:1 and \"redis://***@c\""
        );
        assert_eq!(redact("unix:///tmp/r.sock"), "unix:///tmp/r.sock");
        assert_eq!(redact("no url here"), "no url here");
    }

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
