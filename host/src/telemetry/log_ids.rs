//! `trace_id` and `span_id` on JSON log lines written inside a traced span, so that a log
//! search and a trace lead to each other.
//!
//! The OpenTelemetry layer makes an entered span's context the thread's current one
//! (context activation), so the ids are read from there rather than from the log layer's
//! span stack, which never holds the spans meant for OpenTelemetry.

use std::fmt;

use opentelemetry::trace::TraceContextExt;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;

/// Wraps a JSON event format: a line written in a traced span gets the span's ids as two
/// more fields; any other line is written as the inner format writes it.
pub struct WithTraceIds<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let cx = opentelemetry::Context::current();
        let span = cx.span();
        let ids = span.span_context();
        if !ids.is_valid() {
            return self.0.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let Some(object) = line.trim_end().strip_suffix('}') else {
            return writer.write_str(&line);
        };
        writeln!(
            writer,
            "{object},\"trace_id\":\"{}\",\"span_id\":\"{}\"}}",
            ids.trace_id(),
            ids.span_id()
        )
    }
}
