//! Routing and resilience over the named providers of `[llm]`.
//!
//! A call goes to an ordered list of `provider/model` targets: the route its `model` names,
//! one `provider/model`, or the default. Each target is tried, and tried again with backoff
//! (honouring the provider's `Retry-After` up to `max_retry_after`) on a 429, a 5xx, a
//! connect error or a timeout, up to `retries` times; then the call falls over to the next
//! target. A provider whose circuit is open ([`Breaker`]) is skipped at once. Any other
//! failure (a bad request, a 401) is the answer: another provider would not do better.
//!
//! A stream is routed the same way until the provider has accepted it; once it has, a
//! failure ends the stream with that error. A stream that has already sent tokens is never
//! restarted on another model: the component (and its user) would see two answers spliced.
//!
//! When every target failed, the error says which were tried and how each failed.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::breaker::Breaker;
use super::{Completion, CompletionStream, LlmError, LlmProvider, Request};
use crate::manifest::{LlmConfig, LlmRetry, LlmTarget};
use crate::metrics::LlmMetrics;

/// One named provider and its circuit.
struct Named {
    provider: Arc<dyn LlmProvider>,
    breaker: Breaker,
}

/// The providers of `[llm]` as one [`LlmProvider`].
pub struct Router {
    providers: BTreeMap<String, Named>,
    routes: BTreeMap<String, Vec<LlmTarget>>,
    default: Vec<LlmTarget>,
    retry: LlmRetry,
    metrics: LlmMetrics,
}

impl Router {
    /// `providers` holds one provider per name of `config.providers`.
    pub fn new(
        config: &LlmConfig,
        providers: BTreeMap<String, Arc<dyn LlmProvider>>,
        metrics: LlmMetrics,
    ) -> Self {
        let retry = config.retry;
        for name in providers.keys() {
            metrics.breaker_state(name, 0);
        }
        let providers = providers
            .into_iter()
            .map(|(name, provider)| {
                let breaker = Breaker::new(retry.breaker_failures, retry.breaker_cooldown);
                (name, Named { provider, breaker })
            })
            .collect();
        Self {
            providers,
            routes: config.routes.clone(),
            default: config.default.clone(),
            retry,
            metrics,
        }
    }

    /// The targets of `request`: the route its model names, `provider/model`, the default
    /// provider with that model, or the default targets when it names none.
    fn targets(&self, request: &Request) -> Vec<LlmTarget> {
        let Some(model) = request.model.as_deref() else {
            return self.default.clone();
        };
        if let Some(route) = self.routes.get(model) {
            return route.clone();
        }
        if let Some((provider, rest)) = model.split_once('/')
            && self.providers.contains_key(provider)
            && !rest.is_empty()
        {
            return vec![LlmTarget {
                provider: provider.to_string(),
                model: Some(rest.to_string()),
            }];
        }
        let provider = self
            .default
            .first()
            .map(|t| t.provider.clone())
            .unwrap_or_default();
        vec![LlmTarget {
            provider,
            model: Some(model.to_string()),
        }]
    }

    fn note_breaker(&self, name: &str, named: &Named) {
        let state = named.breaker.state(Instant::now());
        self.metrics.breaker_state(name, state as i64);
    }

    /// Runs `call` on each target in turn, as the module doc says.
    async fn run<T, F, Fut>(&self, request: Request, call: F) -> Result<T, LlmError>
    where
        F: Fn(Arc<dyn LlmProvider>, Request) -> Fut,
        Fut: Future<Output = Result<T, LlmError>>,
    {
        let targets = self.targets(&request);
        let mut tried: Vec<String> = Vec::new();
        let mut last: Option<LlmError> = None;
        let mut tries_in_all = 0;
        for (i, target) in targets.iter().enumerate() {
            let Some(named) = self.providers.get(&target.provider) else {
                tried.push(format!("{target}: no such provider"));
                continue;
            };
            let attempt = Request {
                model: target.model.clone(),
                ..request.clone()
            };
            let mut tries = 0;
            let outcome = loop {
                if !named.breaker.allow(Instant::now()) {
                    self.note_breaker(&target.provider, named);
                    break if tries == 0 {
                        "circuit open".to_string()
                    } else {
                        describe(last.as_ref(), tries)
                    };
                }
                tries += 1;
                tries_in_all += 1;
                match call(named.provider.clone(), attempt.clone()).await {
                    Ok(answer) => {
                        named.breaker.success();
                        self.note_breaker(&target.provider, named);
                        return Ok(answer);
                    }
                    Err(e) if !retryable(&e) => {
                        named.breaker.success();
                        self.note_breaker(&target.provider, named);
                        return Err(e);
                    }
                    Err(e) => {
                        named.breaker.failure(Instant::now());
                        self.note_breaker(&target.provider, named);
                        let wait = match &e {
                            LlmError::Provider {
                                retry_after: Some(after),
                                ..
                            } => (*after <= self.retry.max_retry_after).then_some(*after),
                            _ => Some(self.retry.backoff.delay(tries)),
                        };
                        last = Some(e);
                        match wait {
                            Some(wait) if tries <= self.retry.retries => {
                                self.metrics.retried(&target.provider);
                                crate::timers::sleep(wait).await;
                            }
                            _ => break describe(last.as_ref(), tries),
                        }
                    }
                }
            };
            tried.push(format!("{target}: {outcome}"));
            if let Some(next) = targets.get(i + 1) {
                self.metrics
                    .fell_over(&target.to_string(), &next.to_string());
            }
        }
        Err(gave_up(last, tries_in_all, &tried))
    }
}

/// A 429, a 5xx, a connect error or a timeout: worth another try, here or elsewhere.
fn retryable(e: &LlmError) -> bool {
    match e {
        LlmError::Provider { status, .. } => *status == 429 || *status == 408 || *status >= 500,
        LlmError::Unavailable(_) | LlmError::Timeout => true,
        LlmError::InvalidRequest(_) => false,
    }
}

/// How one target failed, for the error that lists them.
fn describe(last: Option<&LlmError>, tries: u32) -> String {
    let what = match last {
        Some(LlmError::Provider { status, .. }) => format!("answered {status}"),
        Some(LlmError::Timeout) => "timed out".to_string(),
        Some(LlmError::Unavailable(_)) => "unreachable".to_string(),
        Some(LlmError::InvalidRequest(_)) | None => "failed".to_string(),
    };
    format!(
        "{what} ({tries} {})",
        if tries == 1 { "try" } else { "tries" }
    )
}

/// The error of a call every target of which failed: one target tried once keeps its own
/// error; else the last error, saying which targets were tried.
fn gave_up(last: Option<LlmError>, tries: u32, tried: &[String]) -> LlmError {
    let list = tried.join("; ");
    match last {
        Some(e) if tries == 1 && tried.len() == 1 => e,
        Some(LlmError::Provider {
            status, message, ..
        }) => LlmError::Provider {
            status,
            message: format!("{message} (tried {list})"),
            retry_after: None,
        },
        Some(LlmError::Unavailable(m)) => LlmError::Unavailable(format!("{m} (tried {list})")),
        // One target: its own error kind (a 504 to chat's user), tries or not.
        Some(LlmError::Timeout) if tried.len() == 1 => LlmError::Timeout,
        Some(LlmError::Timeout) => LlmError::Unavailable(format!("timed out (tried {list})")),
        Some(e @ LlmError::InvalidRequest(_)) => e,
        None => LlmError::Unavailable(format!("no target could be called (tried {list})")),
    }
}

#[async_trait]
impl LlmProvider for Router {
    fn name(&self) -> &str {
        self.default
            .first()
            .map(|t| t.provider.as_str())
            .unwrap_or("none")
    }

    fn default_model(&self) -> &str {
        let first = self.default.first();
        match first.and_then(|t| t.model.as_deref()) {
            Some(model) => model,
            None => first
                .and_then(|t| self.providers.get(&t.provider))
                .map_or("", |n| n.provider.default_model()),
        }
    }

    async fn complete(&self, request: Request) -> Result<Completion, LlmError> {
        self.run(request, |p, r| async move { p.complete(r).await })
            .await
    }

    async fn stream(&self, request: Request) -> Result<CompletionStream, LlmError> {
        self.run(request, |p, r| async move { p.stream(r).await })
            .await
    }

    async fn embed(
        &self,
        model: Option<String>,
        inputs: Vec<String>,
    ) -> Result<Vec<Vec<f32>>, LlmError> {
        super::check_embed(&inputs)?;
        let request = Request {
            model,
            ..Request::default()
        };
        let inputs = &inputs;
        self.run(request, |p, r| async move {
            p.embed(r.model, inputs.clone()).await
        })
        .await
    }

    async fn probe(&self) -> Result<(), LlmError> {
        let first = self
            .default
            .first()
            .and_then(|t| self.providers.get(&t.provider));
        match first {
            Some(named) => named.provider.probe().await,
            None => Err(LlmError::Unavailable("no provider".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::manifest::Backoff;

    /// Answers each call with the next scripted result, and remembers the models asked.
    struct Scripted {
        name: String,
        answers: Mutex<VecDeque<Result<(), LlmError>>>,
        asked: Mutex<Vec<Option<String>>>,
    }

    impl Scripted {
        fn new(name: &str, answers: Vec<Result<(), LlmError>>) -> Arc<Self> {
            Arc::new(Self {
                name: name.into(),
                answers: Mutex::new(answers.into()),
                asked: Mutex::default(),
            })
        }
        fn asked(&self) -> Vec<Option<String>> {
            self.asked.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl LlmProvider for Scripted {
        fn name(&self) -> &str {
            &self.name
        }
        fn default_model(&self) -> &str {
            "m"
        }
        async fn complete(&self, request: Request) -> Result<Completion, LlmError> {
            self.asked.lock().unwrap().push(request.model.clone());
            let next = self.answers.lock().unwrap().pop_front().unwrap_or(Ok(()));
            next.map(|()| Completion {
                content: format!("from {}", self.name),
                model: request.model.unwrap_or_else(|| "m".into()),
                provider: self.name.clone(),
                usage: None,
            })
        }
        async fn stream(&self, _: Request) -> Result<CompletionStream, LlmError> {
            Err(LlmError::InvalidRequest("not scripted".into()))
        }
        async fn probe(&self) -> Result<(), LlmError> {
            Ok(())
        }
    }

    fn status(status: u16, retry_after: Option<Duration>) -> Result<(), LlmError> {
        Err(LlmError::Provider {
            status,
            message: format!("status {status}"),
            retry_after,
        })
    }

    fn router(a: &Arc<Scripted>, b: &Arc<Scripted>, retry: LlmRetry) -> Router {
        let config = LlmConfig {
            providers: BTreeMap::new(),
            routes: BTreeMap::from([(
                "chat".to_string(),
                vec![
                    LlmTarget {
                        provider: "a".into(),
                        model: Some("big".into()),
                    },
                    LlmTarget {
                        provider: "b".into(),
                        model: None,
                    },
                ],
            )]),
            default: vec![LlmTarget {
                provider: "a".into(),
                model: None,
            }],
            retry,
        };
        let providers = BTreeMap::from([
            ("a".to_string(), a.clone() as Arc<dyn LlmProvider>),
            ("b".to_string(), b.clone() as Arc<dyn LlmProvider>),
        ]);
        Router::new(&config, providers, crate::metrics::LlmMetrics::detached())
    }

    fn quick(retries: u32) -> LlmRetry {
        LlmRetry {
            retries,
            backoff: Backoff::Fixed(Duration::from_millis(1)),
            max_retry_after: Duration::from_secs(1),
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(60),
        }
    }

    fn ask(model: Option<&str>) -> Request {
        Request {
            model: model.map(str::to_string),
            messages: vec![super::super::Message {
                role: super::super::Role::User,
                content: "hi".into(),
            }],
            ..Request::default()
        }
    }

    #[tokio::test]
    async fn a_429_is_retried_after_its_retry_after_then_succeeds() {
        let a = Scripted::new("a", vec![status(429, Some(Duration::from_millis(30)))]);
        let b = Scripted::new("b", vec![]);
        let r = router(&a, &b, quick(2));
        let started = Instant::now();
        let c = r.complete(ask(None)).await.unwrap();
        assert_eq!(c.provider, "a");
        assert!(
            started.elapsed() >= Duration::from_millis(30),
            "waited Retry-After"
        );
        assert_eq!(a.asked().len(), 2);
        assert!(b.asked().is_empty());
    }

    #[tokio::test]
    async fn a_route_falls_over_to_its_next_target_and_says_what_it_tried() {
        let a = Scripted::new("a", vec![status(500, None), status(503, None)]);
        let b = Scripted::new("b", vec![]);
        let r = router(&a, &b, quick(1));
        let c = r.complete(ask(Some("chat"))).await.unwrap();
        assert_eq!(c.provider, "b");
        assert_eq!(
            a.asked(),
            [Some("big".to_string()), Some("big".to_string())]
        );
        assert_eq!(b.asked(), [None], "b's own model");

        let a = Scripted::new("a", vec![status(500, None), status(500, None)]);
        let b = Scripted::new("b", vec![Err(LlmError::Timeout), Err(LlmError::Timeout)]);
        let r = router(&a, &b, quick(1));
        let e = r.complete(ask(Some("chat"))).await.unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, LlmError::Unavailable(_)), "{e:?}");
        assert!(
            text.contains("tried a/big: answered 500 (2 tries); b: timed out (2 tries)"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_bad_request_is_not_retried_nor_sent_elsewhere() {
        let a = Scripted::new("a", vec![status(400, None)]);
        let b = Scripted::new("b", vec![]);
        let r = router(&a, &b, quick(3));
        let e = r.complete(ask(Some("chat"))).await.unwrap_err();
        assert!(matches!(e, LlmError::Provider { status: 400, .. }), "{e}");
        assert_eq!((a.asked().len(), b.asked().len()), (1, 0));
    }

    #[tokio::test]
    async fn a_retry_after_beyond_the_bound_falls_over_at_once() {
        let a = Scripted::new("a", vec![status(429, Some(Duration::from_secs(60)))]);
        let b = Scripted::new("b", vec![]);
        let r = router(&a, &b, quick(3));
        let started = Instant::now();
        assert_eq!(r.complete(ask(Some("chat"))).await.unwrap().provider, "b");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(a.asked().len(), 1);
    }

    #[tokio::test]
    async fn an_open_circuit_skips_its_provider() {
        let a = Scripted::new("a", vec![status(502, None); 3]);
        let b = Scripted::new("b", vec![]);
        let r = router(&a, &b, quick(2));
        assert_eq!(r.complete(ask(Some("chat"))).await.unwrap().provider, "b");
        assert_eq!(a.asked().len(), 3, "three failures open the circuit");
        assert_eq!(r.complete(ask(Some("chat"))).await.unwrap().provider, "b");
        assert_eq!(a.asked().len(), 3, "an open circuit is not called");
        let e = r.complete(ask(None)).await.unwrap_err().to_string();
        assert!(e.contains("a: circuit open"), "{e}");
    }

    #[tokio::test]
    async fn models_pick_a_route_a_provider_or_the_default_provider() {
        let a = Scripted::new("a", vec![]);
        let b = Scripted::new("b", vec![]);
        let r = router(&a, &b, quick(0));
        assert_eq!(
            r.complete(ask(Some("b/small"))).await.unwrap().provider,
            "b"
        );
        assert_eq!(b.asked(), [Some("small".to_string())]);
        r.complete(ask(Some("gpt-x"))).await.unwrap();
        assert_eq!(
            a.asked(),
            [Some("gpt-x".to_string())],
            "a bare model goes to the default"
        );
    }
}
