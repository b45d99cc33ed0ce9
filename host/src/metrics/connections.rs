//! The HTTP server's connection counts: how many are open, and how many each connection
//! limit of `[http]` refused or cut. The server logs a limit once, the first time it acts;
//! from then on these counters are the record.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// A connection limit of `[http]`, named as its manifest field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionLimit {
    /// A connection over the cap was refused at accept.
    MaxConnections,
    /// A request head did not arrive in time; the connection was closed.
    HeaderReadTimeout,
    /// A keep-alive connection sat idle too long; it was closed.
    IdleTimeout,
}

impl ConnectionLimit {
    pub const ALL: [ConnectionLimit; 3] = [
        ConnectionLimit::MaxConnections,
        ConnectionLimit::HeaderReadTimeout,
        ConnectionLimit::IdleTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionLimit::MaxConnections => "max_connections",
            ConnectionLimit::HeaderReadTimeout => "header_read_timeout",
            ConnectionLimit::IdleTimeout => "idle_timeout",
        }
    }
}

impl EncodeLabelValue for ConnectionLimit {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct LimitLabels {
    pub limit: ConnectionLimit,
}

/// Handles the HTTP server records its connections with; see
/// [`super::Metrics::connections`].
#[derive(Debug, Clone)]
pub struct ConnectionMetrics {
    pub(super) open: Gauge,
    /// Indexed by the position of the limit in [`ConnectionLimit::ALL`].
    pub(super) refused: [Counter; 3],
}

impl ConnectionMetrics {
    pub(super) fn new(open: Gauge, refused: &Family<LimitLabels, Counter>) -> Self {
        Self {
            open,
            refused: ConnectionLimit::ALL
                .map(|limit| refused.get_or_create_owned(&LimitLabels { limit })),
        }
    }

    /// One connection more open; it counts until the returned guard drops.
    pub fn opened(&self) -> OpenConnection {
        self.open.inc();
        OpenConnection(self.open.clone())
    }

    /// `limit` refused or cut one connection.
    pub fn refused(&self, limit: ConnectionLimit) {
        self.refused[limit as usize].inc();
    }
}

/// An open connection, counted in `llmchat_http_connections_open` until dropped.
#[derive(Debug)]
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
