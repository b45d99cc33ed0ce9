//! The commands besides `up`: those that talk to a running host through its admin API
//! (`enqueue`, `queues` and `dead` in [`queues`]; `deploy`, `components` and `rollback` in
//! [`components`]; all over one [`client::AdminClient`]), `new` ([`new`]), which
//! scaffolds a component folder from the templates embedded in the binary, and `compile`
//! ([`compile`]), which compiles components into the artifact cache outside the server.
//!
//! Exit codes: 0 on success, 2 for input refused before any request ([`UsageError`], as
//! clap does for bad arguments), 1 for everything else (host unreachable, an HTTP error).

mod client;
pub mod compile;
pub mod components;
pub mod jobs;
pub mod new;
pub mod queues;
mod table;

/// Bad command-line input found before any request was sent; exits with status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Where the host's admin API is; shared by every admin command.
#[derive(clap::Args, Debug)]
pub struct HostArg {
    /// Base URL of the running llmchat host.
    #[arg(
        long = "host",
        env = "LLMCHAT_HOST",
        value_name = "URL",
        default_value = "http://127.0.0.1:3001"
    )]
    pub url: String,
}
