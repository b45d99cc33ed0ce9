//! `llmchat:runtime/log`: guest log lines into the host log, tagged with the component and
//! the invocation's number.

use super::CapabilityCtx;
use super::bindings::llmchat::runtime::log::{self, Level};

/// Longest message kept; the rest is cut so one guest cannot flood the log.
const MAX_MESSAGE: usize = 4096;
/// Lines one invocation may log; later ones are dropped (after one line saying so), so a
/// guest in a logging loop costs the host neither memory nor a flooded log.
pub(super) const MAX_LINES: u32 = 1000;

impl log::Host for &mut CapabilityCtx {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.log_lines = self.log_lines.saturating_add(1);
        if self.log_lines > MAX_LINES {
            if self.log_lines == MAX_LINES + 1 {
                tracing::warn!(
                    target: "guest",
                    component = self.component.name.as_str(),
                    invocation = self.invocation,
                    "this invocation logged {MAX_LINES} lines; its further lines are dropped"
                );
            }
            return Ok(());
        }
        let mut message = message;
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let component = self.component.name.as_str();
        let invocation = self.invocation;
        match level {
            Level::Trace => tracing::trace!(target: "guest", component, invocation, "{message}"),
            Level::Debug => tracing::debug!(target: "guest", component, invocation, "{message}"),
            Level::Info => tracing::info!(target: "guest", component, invocation, "{message}"),
            Level::Warn => tracing::warn!(target: "guest", component, invocation, "{message}"),
            Level::Error => tracing::error!(target: "guest", component, invocation, "{message}"),
        }
        Ok(())
    }
}
