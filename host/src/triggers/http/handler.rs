//! One request, one fresh instance of a `wasi:http` component.
//!
//! Order matters for "bad input changes nothing": the route, the body size and the instance
//! slot are all checked before a store is created, so a refused request never instantiates
//! anything. The guest runs in the request's task until its response head is out, then (if
//! it is still running: streaming, or saving state afterwards) in a task tracked by the
//! server ([`super::inline`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tracing::Instrument;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use super::HttpInvoker;
use super::cut::{CutAware, FailedFlag};
use super::error::ApiError;
use super::inline::{Inline, Until};
use super::job_events;
use super::observed::{AccessEntry, observe};
use super::routes::{Route, RouteMatch};
use crate::engine::InvocationError;
use crate::metrics::{ErrorKind, UNMATCHED};
use crate::registry::LoadedComponent;
use crate::runtime::invoke;
use crate::telemetry::spans;

/// Serves any request that is not one of the host's own endpoints, and counts it (and logs
/// it, with `[http] access_log`; ends its trace span) once its response body has ended
/// ([`super::observed`]).
pub async fn dispatch(State(app): State<Arc<HttpInvoker>>, request: Request<Body>) -> Response {
    let arrived = Instant::now();
    let table = app.routes.table();
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let mut access = app.access_log.then(|| {
        Box::new(AccessEntry {
            method: request.method().clone(),
            path: request.uri().path().to_string(),
            route: UNMATCHED.to_string(),
            component: None,
            client: peer,
        })
    });
    let span = spans::http_request(&request, peer);
    let (response, metrics) = match table.find(request.method(), request.uri().path()) {
        RouteMatch::Found(route) => {
            if let Some(access) = access.as_mut() {
                access.route = route.pattern().to_string();
                access.component = Some(route.component.name().to_string());
            }
            spans::record_route(&span, request.method(), route.pattern());
            let handled = handle(&app, route, peer, request)
                .instrument(span.clone())
                .await;
            let response = match handled {
                Ok(response) => response,
                Err(e) => e.into_response(),
            };
            (response, route.http.clone())
        }
        RouteMatch::MethodNotAllowed(allow) => {
            let mut e = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "method {} is not allowed for {}",
                    request.method(),
                    request.uri().path()
                ),
            );
            e.allow = Some(allow);
            (e.into_response(), app.routes.unmatched().clone())
        }
        RouteMatch::NotFound => (
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no route for {} {}", request.method(), request.uri().path()),
            )
            .into_response(),
            app.routes.unmatched().clone(),
        ),
    };
    observe(response, metrics, arrived, access, span)
}

async fn handle(
    app: &Arc<HttpInvoker>,
    route: &Route,
    peer: Option<std::net::IpAddr>,
    request: Request<Body>,
) -> Result<Response, ApiError> {
    // The rate limit comes first: a refused request reads no body and makes no instance.
    let mut limit_headers = Vec::new();
    if let Some(limit) = &route.limit {
        let key = limit.key(request.headers(), peer);
        let decision = app.routes.limiter().check(&key, &limit.limit).await;
        limit_headers = crate::limits::headers(&limit.limit, &decision);
        if !decision.allowed {
            route.metrics.rate_limited();
            let mut response = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "rate limit of {} (burst {}) exceeded for this client; retry in {} ms",
                    limit.limit.rate,
                    limit.limit.burst,
                    decision.retry_after.as_millis()
                ),
            )
            .into_response();
            add_headers(&mut response, &limit_headers);
            return Ok(response);
        }
    }
    let component = &route.component;
    let (parts, body) = request.into_parts();
    let body = read_body(body, route.max_body_size).await?;
    // The fast path takes a free slot without arming a timer.
    let permit = match component.slots.clone().try_acquire_owned() {
        Ok(permit) => permit,
        Err(_) => {
            crate::timers::timeout(app.instance_wait, component.slots.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok)
                .ok_or_else(|| busy(component))?
        }
    };

    let Some(proxy) = component.http.clone() else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "component is not an HTTP handler",
        ));
    };
    let mut store = component.new_store(&app.engine, &app.services);
    let request = Request::from_parts(
        parts,
        Full::new(body)
            .map_err(|never: Infallible| -> wasmtime_wasi_http::Error { match never {} }),
    );
    let incoming = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, request)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("{e}")))?;
    let (sender, mut receiver) = tokio::sync::oneshot::channel();
    let outparam = store
        .data_mut()
        .http()
        .new_response_outparam(sender)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}")))?;

    let task_component = component.clone();
    let metrics = route.metrics.clone();
    let failed = FailedFlag::default();
    let task_failed = failed.clone();
    let timeout = component.spec.timeout;
    let mut invocation = Inline::new(
        async move {
            let _permit = permit;
            let invoked = invoke(task_component.name(), store, timeout, &metrics, |store| {
                Box::pin(async move {
                    let instance = proxy.instantiate_async(&mut *store).await?;
                    instance
                        .wasi_http_incoming_handler()
                        .call_handle(store, incoming, outparam)
                        .await
                })
            })
            .await;
            if invoked.result.is_err() {
                // Before the store drops, which ends a body the guest did not finish.
                task_failed.set();
            }
            invoked.result
        },
        app.tasks.clone(),
    );

    let head = match invocation.until_head(&mut receiver).await {
        Until::Head(head) => {
            invocation.detach();
            head
        }
        Until::Ended(result) => match receiver.try_recv() {
            Ok(head) => head,
            Err(_) => {
                return Err(match result {
                    Err(e) => failure(component, &e),
                    Ok(()) => ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!(
                            "component `{}` returned without sending a response",
                            component.name()
                        ),
                    ),
                });
            }
        },
    };
    match head {
        Ok(response) if response.headers().contains_key(job_events::HANDOFF_HEADER) => {
            let mut response = handoff(&app.services.queues, component, response.headers()).await?;
            add_headers(&mut response, &limit_headers);
            Ok(response)
        }
        Ok(response) => {
            let mut response = response.map(|body| Body::new(CutAware::new(body, failed)));
            add_headers(&mut response, &limit_headers);
            Ok(response)
        }
        Err(code) => {
            // The guest chose to fail; it may still be running and counts as it ends.
            route.metrics.error(ErrorKind::Guest);
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "component `{}` answered with an error: {code:?}",
                    component.name()
                ),
            ))
        }
    }
}

/// A component handed its response to a job's events ([`job_events::HANDOFF_HEADER`],
/// `queue/id`, the job it checked the caller may follow): the job's SSE stream, or a 404
/// when the job is unknown. Its own body is dropped.
async fn handoff(
    queues: &Arc<crate::queue::Queues>,
    component: &LoadedComponent,
    headers: &http::HeaderMap,
) -> Result<Response, ApiError> {
    let bad = |why: String| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "component `{}` handed over to job events wrongly: {why}",
                component.name()
            ),
        )
    };
    let value = headers
        .get(job_events::HANDOFF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some((queue, id)) = value.split_once('/') else {
        return Err(bad(format!("{value:?} is not `queue/id`")));
    };
    queues.trigger(queue).map_err(|e| bad(e.to_string()))?;
    match queues.backend().job(queue, id).await? {
        Some(first) => Ok(job_events::response(queues.clone(), first)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no job `{id}` (it may have finished and not been kept)"),
        )),
    }
}

fn add_headers(response: &mut Response, headers: &[(&'static str, String)]) {
    for (name, value) in headers {
        if let Ok(value) = http::HeaderValue::from_str(value) {
            response.headers_mut().insert(*name, value);
        }
    }
}

/// How much of an oversized body is read and discarded before the 413 is sent. Answering
/// while the client is still writing makes many clients fail with a broken pipe instead of
/// reading the 413; past this much (or [`DRAIN_TIME`]) the connection is simply closed.
const DRAIN_LIMIT: u64 = 16 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads the whole body, refusing more than `limit` bytes with 413 before any instance runs.
/// The admin API reads its bodies with it too.
pub(crate) async fn read_body(mut body: Body, limit: u64) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {limit} bytes"),
        )
    };
    let mut collected = bytes::BytesMut::new();
    let mut total: u64 = http_body::Body::size_hint(&body)
        .lower()
        .min(DRAIN_LIMIT + 1);
    if total <= limit {
        total = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("reading request body: {e}"),
                )
            })?;
            if let Some(data) = frame.data_ref() {
                total += data.len() as u64;
                if total > limit {
                    break;
                }
                collected.extend_from_slice(data);
            }
        }
        if total <= limit {
            return Ok(collected.freeze());
        }
    }
    if total <= DRAIN_LIMIT {
        let drain = async {
            while let Some(Ok(frame)) = body.frame().await {
                total += frame.data_ref().map_or(0, |d| d.len() as u64);
                if total > DRAIN_LIMIT {
                    break;
                }
            }
        };
        let _ = crate::timers::timeout(DRAIN_TIME, drain).await;
    }
    Err(too_large())
}

fn busy(component: &LoadedComponent) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "component `{}` is busy: all {} instances are in use; retry later",
            component.name(),
            component.spec.max_instances
        ),
    );
    e.retry_after = Some(1);
    e
}

fn failure(component: &LoadedComponent, e: &InvocationError) -> ApiError {
    let status = match e {
        InvocationError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(
        status,
        format!("component `{}` failed: {e}", component.name()),
    )
}
