//! How the authorization layers answer and log a denied call: the caller is told the code
//! and a short reason (who was refused, for what), never the policy; the log has the whole
//! expected-vs-presented detail, a few lines per second at most.

use crate::server::LogLimiter;

/// The denial settings and log budget of one layer (shared by every connection's service).
#[derive(Debug)]
pub(crate) struct Denials {
    /// Development: answer with the full detail, the policy included.
    detailed: bool,
    log: LogLimiter,
}

impl Denials {
    pub(crate) const fn new(detailed: bool) -> Self {
        Self {
            detailed,
            log: LogLimiter::new(),
        }
    }

    /// Whether callers get the full detail ([`AuthzLayer::detailed_denials`](crate::authz::AuthzLayer::detailed_denials)).
    pub(crate) fn detailed(&self) -> bool {
        self.detailed
    }

    /// Whether this denial gets its own log line, and if so how many earlier ones did not
    /// (over the budget since the last line).
    pub(crate) fn log_line(&self) -> Option<u64> {
        self.log.allow().then(|| self.log.take_suppressed())
    }
}
