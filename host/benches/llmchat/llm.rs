//! (o) What the host adds to one LLM call (issue 17): a local OpenAI-compatible fake that
//! answers at once, called through the host's provider stack (router, metrics wrapper, the
//! `openai` provider: request body, response parsing, SSE decoding) and, as the baseline, by
//! a bare `reqwest` client sending the same body and reading the whole answer. The added
//! latency is the difference of the two, at the median and the 99th percentile, plain and
//! streamed. Sequential calls, one connection kept alive, after a warm-up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;

use llmchat_host::llm::{Message, Request, Role};
use llmchat_host::manifest::{HumanDuration, LlmConfig, LlmRetry, LlmSettings, LlmTarget};

use crate::{micros, percentile};

const CALLS: usize = 3000;
const WARMUP: usize = 300;

/// Per-call latencies in µs: (baseline, through the host), plain and streamed.
pub struct Results {
    pub plain: (Vec<f64>, Vec<f64>),
    pub streamed: (Vec<f64>, Vec<f64>),
}

impl Results {
    /// (p50, p99) of the host's latency minus the baseline's.
    pub fn added(pair: &(Vec<f64>, Vec<f64>)) -> (f64, f64) {
        let (bare, host) = pair;
        (
            percentile(host, 50.0) - percentile(bare, 50.0),
            percentile(host, 99.0) - percentile(bare, 99.0),
        )
    }
}

const COMPLETION: &str = r#"{"id":"c","object":"chat.completion","created":0,"model":"fake","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, friend."},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":4,"total_tokens":11}}"#;

fn stream_body() -> String {
    let mut out = String::new();
    for word in ["Hello", " there,", " friend."] {
        out.push_str(&format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"fake\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{word}\"}},\"finish_reason\":null}}]}}\n\n"
        ));
    }
    out.push_str("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"fake\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10}}\n\ndata: [DONE]\n\n");
    out
}

/// The fake: answers every POST at once, streamed when the body asks for it.
async fn fake() -> Result<String> {
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the fake LLM")?;
    let addr = listener.local_addr()?;
    let stream = stream_body();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |body: String| {
            let stream = stream.clone();
            async move {
                if body.contains("\"stream\":true") {
                    ([("content-type", "text/event-stream")], stream).into_response()
                } else {
                    ([("content-type", "application/json")], COMPLETION).into_response()
                }
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}/v1"))
}

fn request() -> Request {
    Request {
        model: None,
        messages: vec![
            Message {
                role: Role::System,
                content: "You are a helpful assistant.".into(),
            },
            Message {
                role: Role::User,
                content: "Say hello.".into(),
            },
        ],
        max_tokens: Some(64),
        temperature: None,
    }
}

pub fn measure() -> Result<Results> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a tokio runtime")?;
    rt.block_on(async {
        let base_url = fake().await?;
        let settings = LlmSettings::Openai {
            base_url: base_url.clone(),
            api_key_env: None,
            model: "fake".into(),
            timeout: HumanDuration(Duration::from_secs(10)),
            connect_timeout: HumanDuration(Duration::from_secs(5)),
            embedding_model: None,
        };
        let config = LlmConfig {
            providers: BTreeMap::from([("openai".to_string(), settings)]),
            routes: BTreeMap::new(),
            default: vec![LlmTarget {
                provider: "openai".into(),
                model: None,
            }],
            retry: LlmRetry::default(),
        };
        let host =
            llmchat_host::llm::from_config(&config, llmchat_host::metrics::LlmMetrics::detached())?;
        let bare = reqwest::Client::new();
        let url = format!("{base_url}/chat/completions");
        let body = |stream: bool| {
            serde_json::json!({
                "model": "fake", "messages": request().messages, "stream": stream,
                "max_tokens": 64,
            })
        };
        let mut plain = (Vec::new(), Vec::new());
        let mut streamed = (Vec::new(), Vec::new());
        for i in 0..WARMUP + CALLS {
            let keep = i >= WARMUP;
            // Interleaved, so drift on a busy machine hits both alike.
            let t = Instant::now();
            let text = bare
                .post(&url)
                .json(&body(false))
                .send()
                .await?
                .text()
                .await?;
            let bare_plain = t.elapsed();
            if !text.contains("Hello") {
                bail!("the fake answered {text}");
            }
            let t = Instant::now();
            let answer = host.complete(request()).await?;
            let host_plain = t.elapsed();
            if answer.content != "Hello there, friend." {
                bail!("the host read {:?}", answer.content);
            }
            let t = Instant::now();
            let bytes = bare
                .post(&url)
                .json(&body(true))
                .send()
                .await?
                .bytes()
                .await?;
            let bare_stream = t.elapsed();
            if bytes.is_empty() {
                bail!("the fake sent an empty stream");
            }
            let t = Instant::now();
            let mut events = host.stream(request()).await?;
            let mut n = 0;
            while let Some(event) = events.next().await {
                event?;
                n += 1;
            }
            let host_stream = t.elapsed();
            if n != 4 {
                bail!("the host read {n} stream events, not 3 deltas and the usage");
            }
            if keep {
                plain.0.push(micros(bare_plain));
                plain.1.push(micros(host_plain));
                streamed.0.push(micros(bare_stream));
                streamed.1.push(micros(host_stream));
            }
        }
        Ok(Results { plain, streamed })
    })
}
