//! [`InvocationState`]: everything one invocation's `Store` owns.
//!
//! It is built fresh for every invocation and dropped with the store, so nothing a guest
//! does can leak into the next call. The WASI context is empty: no files, environment,
//! arguments or sockets; guest stdout/stderr go to a small bounded buffer that the host
//! logs, and outgoing HTTP is refused unless the manifest lists the destination. With
//! tracing on, an outgoing request is a client span and carries its `traceparent`.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::capabilities::CapabilityCtx;
use crate::engine::budget::{Budget, BudgetHandle};
use crate::engine::{InstanceLimiter, Limited};

/// How much guest stdout/stderr is kept for the log; the rest is dropped.
const GUEST_OUTPUT_CAPACITY: usize = 4096;

/// What one outgoing HTTP request in flight is charged, beyond what the allocator sees while
/// the guest runs: its connection task's buffers (hyper reads up to ~400 KB ahead) live in
/// another task, so they are reserved up front and given back when the connection ends.
const OUTBOUND_CONNECTION_COST: usize = 512 << 10;

/// The data of one invocation's store.
pub struct InvocationState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limiter: InstanceLimiter,
    outbound: OutboundHooks,
    output: MemoryOutputPipe,
    pub caps: CapabilityCtx,
}

impl InvocationState {
    /// `environment` is what the manifest grants (usually nothing); no other ambient
    /// authority exists: no preopened files, no arguments, no sockets.
    /// `max_resources` caps the handles the instance may hold at once (each costs the host a
    /// table entry and whatever the resource owns).
    pub fn new(
        memory_cap: usize,
        max_resources: usize,
        outbound: OutboundPolicy,
        environment: &[(String, String)],
        caps: CapabilityCtx,
    ) -> Self {
        let output = MemoryOutputPipe::new(GUEST_OUTPUT_CAPACITY);
        let wasi = WasiCtx::builder()
            .stdout(output.clone())
            .stderr(output.clone())
            .envs(environment)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(max_resources);
        let limiter = InstanceLimiter::new(memory_cap);
        let outbound = OutboundHooks {
            policy: outbound,
            budget: limiter.budget().map(Budget::handle),
        };
        Self {
            wasi,
            http: WasiHttpCtx::new(),
            table,
            limiter,
            outbound,
            output,
            caps,
        }
    }

    /// The invocation's peak footprint: linear memories, tables and host-side bytes.
    pub fn peak_memory(&self) -> usize {
        self.limiter.peak_bytes()
    }

    /// The peak of the host-side part alone.
    pub fn peak_host_memory(&self) -> usize {
        self.limiter.peak_host_bytes()
    }

    /// Both peaks, for the metrics.
    pub fn peak(&self) -> crate::metrics::PeakMemory {
        crate::metrics::PeakMemory {
            total: self.peak_memory(),
            host: self.peak_host_memory(),
        }
    }

    /// What the guest wrote to stdout and stderr (at most a few KiB), lossily decoded.
    pub fn guest_output(&self) -> String {
        String::from_utf8_lossy(&self.output.contents())
            .trim_end()
            .to_string()
    }

    /// `message`, followed by the guest's output when it wrote any.
    pub fn with_guest_output(&self, message: &str) -> String {
        match self.guest_output() {
            output if output.is_empty() => message.to_string(),
            output => format!("{message} (guest output: {output})"),
        }
    }
}

impl Limited for InvocationState {
    fn limiter(&self) -> &InstanceLimiter {
        &self.limiter
    }

    fn limiter_mut(&mut self) -> &mut InstanceLimiter {
        &mut self.limiter
    }

    fn max_resources(&self) -> usize {
        self.table.max_capacity()
    }
}

impl WasiView for InvocationState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InvocationState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// Which outgoing `wasi:http` requests a component may make: only to the origins
/// (`scheme://host[:port]`) its manifest entry lists. Everything else is `HTTP-request-denied`.
#[derive(Clone, Default)]
pub struct OutboundPolicy {
    allowed: Arc<[String]>,
}

impl OutboundPolicy {
    pub fn new(allowed: &[String]) -> Self {
        let allowed = allowed
            .iter()
            .map(|h| h.trim_end_matches('/').to_ascii_lowercase())
            .collect();
        Self { allowed }
    }

    pub fn allows(&self, uri: &http::Uri) -> bool {
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return false;
        };
        let origin = format!("{scheme}://{authority}").to_ascii_lowercase();
        self.allowed.contains(&origin)
    }
}

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<HyperOutgoingBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

/// One invocation's outgoing-HTTP hooks: the component's policy, and its budget, which each
/// connection in flight is charged to.
struct OutboundHooks {
    policy: OutboundPolicy,
    budget: Option<BudgetHandle>,
}

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        mut request: http::Request<HyperOutgoingBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        if !self.policy.allows(request.uri()) {
            tracing::warn!(uri = %request.uri(), "outgoing request denied: origin not in allowed_outbound_hosts");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let reservation = match self.budget.map(|b| b.reserve(OUTBOUND_CONNECTION_COST)) {
            Some(Err(e)) => {
                let message = format!(
                    "{e} (each outgoing request in flight holds {OUTBOUND_CONNECTION_COST} bytes)"
                );
                return Box::new(async move {
                    Err(wasmtime_wasi_http::Error::InternalError(Some(message)))
                });
            }
            Some(Ok(r)) => Some(r),
            None => None,
        };
        let _ = fut;
        // Made here, in the guest's call, where the invocation span is the current one.
        let span = crate::telemetry::spans::outbound(request.method(), request.uri());
        if !span.is_none() {
            crate::telemetry::propagation::inject(&span, request.headers_mut());
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            use tracing::Instrument;
            let sent = wasmtime_wasi_http::default_send_request(request, options)
                .instrument(span.clone())
                .await;
            match &sent {
                Ok((res, _)) => {
                    crate::telemetry::spans::record_status(&span, res.status().as_u16())
                }
                Err(e) => crate::telemetry::spans::record_error(&span, &format!("{e:?}")),
            }
            drop(span);
            let (res, io) = sent?;
            let io = async move {
                let _reservation = reservation;
                io.await
            };
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_policy_matches_whole_origins_only() {
        let p = OutboundPolicy::new(&["http://127.0.0.1:8080/".to_string()]);
        assert!(p.allows(&"http://127.0.0.1:8080/v1/x".parse().unwrap()));
        assert!(!p.allows(&"http://127.0.0.1:8081/".parse().unwrap()));
        assert!(!p.allows(&"https://127.0.0.1:8080/".parse().unwrap()));
        assert!(!OutboundPolicy::default().allows(&"http://example.com/".parse().unwrap()));
    }
}
