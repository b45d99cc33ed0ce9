//! A small client for the admin API: the bearer token from `LLMCHAT_ADMIN_TOKEN` (never an
//! argument), and errors that say whether the host was unreachable or what it answered.

use std::error::Error as _;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use llmchat_host::admin::auth::TOKEN_ENV;

/// How long one admin call may take, connecting included.
const TIMEOUT: Duration = Duration::from_secs(30);

/// How long an upload may take: sending up to `[deploy] max_component_size` and compiling it.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(300);

pub struct AdminClient {
    http: reqwest::Client,
    /// Without a trailing `/`.
    base: String,
    token: Option<String>,
}

impl AdminClient {
    /// A client for the host at `url` (`http://` is assumed when no scheme is given).
    pub fn new(url: &str) -> Result<Self> {
        let base = if url.contains("://") {
            url.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", url.trim_end_matches('/'))
        };
        reqwest::Url::parse(&base).with_context(|| format!("invalid --host URL {url:?}"))?;
        // Admin calls carry the token: they go straight to the host, never through a proxy.
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .no_proxy()
            .build()
            .context("building the HTTP client")?;
        let token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
        Ok(Self { http, base, token })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::GET, path, None::<&()>).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::DELETE, path, None::<&()>).await
    }

    /// A POST without a body.
    pub async fn post_empty<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::POST, path, None::<&()>).await
    }

    /// A PUT of `body` as is, e.g. a multipart upload; allowed [`UPLOAD_TIMEOUT`].
    pub async fn put_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<T> {
        self.send(Method::PUT, path, |request| {
            request
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .timeout(UPLOAD_TIMEOUT)
                .body(body)
        })
        .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        self.send(method, path, |request| match body {
            Some(body) => request.json(body),
            None => request,
        })
        .await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        with_body: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<T> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let request = with_body(request);
        let response = request.send().await.map_err(|e| {
            anyhow!(
                "cannot reach llmchat at {}: {}",
                self.base,
                cause(&e.without_url())
            )
        })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("reading the answer to {method} {path}"))?;
        if !status.is_success() {
            return Err(anyhow!(http_error(status, &text, self.token.is_some())));
        }
        serde_json::from_str(&text)
            .with_context(|| format!("unexpected answer to {method} {path}: {text:?}"))
    }
}

/// The error of a failed admin call: the server's `error` text and the status.
fn http_error(status: StatusCode, body: &str, had_token: bool) -> String {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string());
    let hint = if status == StatusCode::UNAUTHORIZED && !had_token {
        format!(" (set {TOKEN_ENV})")
    } else {
        String::new()
    };
    format!("llmchat answered {status}: {message}{hint}")
}

/// The innermost causes of a request error, e.g. "tcp connect error: Connection refused".
fn cause(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts
            .last()
            .is_some_and(|last: &String| last.contains(&text))
        {
            parts.push(text);
        }
        source = s.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_errors_quote_the_server_and_hint_at_the_token() {
        assert_eq!(
            http_error(
                StatusCode::NOT_FOUND,
                r#"{"error":"unknown queue `x`"}"#,
                false
            ),
            "llmchat answered 404 Not Found: unknown queue `x`"
        );
        assert_eq!(
            http_error(
                StatusCode::UNAUTHORIZED,
                r#"{"error":"admin API needs a bearer token"}"#,
                false
            ),
            "llmchat answered 401 Unauthorized: admin API needs a bearer token (set LLMCHAT_ADMIN_TOKEN)"
        );
        assert_eq!(
            http_error(StatusCode::BAD_GATEWAY, "upstream down\n", true),
            "llmchat answered 502 Bad Gateway: upstream down"
        );
    }

    #[test]
    fn host_urls_get_a_scheme_and_lose_the_trailing_slash() {
        assert_eq!(
            AdminClient::new("127.0.0.1:3001").unwrap().base,
            "http://127.0.0.1:3001"
        );
        assert_eq!(AdminClient::new("http://h:1/").unwrap().base, "http://h:1");
        assert!(AdminClient::new("http://[bad").is_err());
    }
}
