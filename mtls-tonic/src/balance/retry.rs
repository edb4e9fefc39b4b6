//! Opt-in retry policy (gRFC A6 `retryPolicy`) and retry throttling, configurable from the
//! JSON shape of a gRPC service config.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tonic::Code;

use crate::{Error, Result};

/// gRFC A6's `retryPolicy` for a method or service: how often a call is retried when it
/// fails with one of the retryable status codes.
///
/// Retries honour the call's deadline (each attempt carries the remaining `grpc-timeout`),
/// carry `grpc-previous-rpc-attempts`, prefer an endpoint that has not failed this call yet,
/// and wait `random(0, min(initial × multiplier^(n-1), max))` before attempt `n + 1` (or the
/// server's `grpc-retry-pushback-ms`). A call is retried only while its response has not
/// started: a failure status in a trailers-only response, or a transport error. Only
/// replayable calls (unary, buffered client streaming) are retried.
///
/// ```
/// use std::time::Duration;
/// use mtls_tonic::balance::RetryPolicy;
/// let policy = RetryPolicy::new(3)
///     .backoff(Duration::from_millis(50), Duration::from_millis(500), 2.0)
///     .retryable([tonic::Code::Unavailable]);
/// assert_eq!(policy.max_attempts(), 3);
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    multiplier: f64,
    retryable: u32,
}

impl RetryPolicy {
    /// At most `max_attempts` attempts in all (2..=5, as gRPC clamps it), retrying
    /// UNAVAILABLE, with backoff 100 ms × 2 up to 1 s.
    pub fn new(max_attempts: u32) -> Self {
        Self {
            max_attempts: max_attempts.clamp(2, 5),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            multiplier: 2.0,
            retryable: code_bit(Code::Unavailable),
        }
    }

    /// Backoff before the first retry at most `initial`, growing by `multiplier` up to `max`.
    pub fn backoff(mut self, initial: Duration, max: Duration, multiplier: f64) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self.multiplier = if multiplier.is_finite() && multiplier > 0.0 {
            multiplier
        } else {
            1.0
        };
        self
    }

    /// The status codes that are retried (replacing the default UNAVAILABLE).
    pub fn retryable(mut self, codes: impl IntoIterator<Item = Code>) -> Self {
        self.retryable = codes
            .into_iter()
            .fold(0, |bits, code| bits | code_bit(code));
        self
    }

    /// The configured number of attempts.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    pub(crate) fn retries(&self, code: Code) -> bool {
        self.retryable & code_bit(code) != 0
    }

    /// The randomized delay before attempt `attempt + 1` (`attempt` >= 1).
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let exp = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let cap = (self.initial_backoff.as_secs_f64() * self.multiplier.powi(exp))
            .min(self.max_backoff.as_secs_f64());
        Duration::from_secs_f64(cap * fastrand::f64())
    }
}

fn code_bit(code: Code) -> u32 {
    1u32 << ((code as i32).clamp(0, 31))
}

/// gRFC A6 retry throttling: a token bucket per channel. Each failed attempt takes a token,
/// each success gives back `token_ratio`; retries stop while the bucket is at or below half,
/// so retries cannot amplify an outage.
///
/// ```
/// let throttling = mtls_tonic::balance::RetryThrottling::new(10, 0.1);
/// assert_eq!(throttling.max_tokens(), 10);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct RetryThrottling {
    max_tokens: u32,
    token_ratio: f64,
}

impl RetryThrottling {
    /// `max_tokens` (1..=1000) and `token_ratio` (> 0, three decimals are kept).
    pub fn new(max_tokens: u32, token_ratio: f64) -> Self {
        Self {
            max_tokens: max_tokens.clamp(1, 1000),
            token_ratio: if token_ratio.is_finite() && token_ratio > 0.0 {
                token_ratio
            } else {
                0.001
            },
        }
    }

    /// The bucket size.
    pub fn max_tokens(&self) -> u32 {
        self.max_tokens
    }
}

/// The channel's live token bucket, in thousandths of a token.
#[derive(Debug)]
pub(crate) struct Throttle {
    tokens: AtomicU64,
    max: u64,
    ratio: u64,
}

impl Throttle {
    fn new(config: RetryThrottling) -> Self {
        let max = u64::from(config.max_tokens) * 1000;
        // Three decimals: the ratio in thousandths, at least one.
        let ratio = ((config.token_ratio * 1000.0).round() as u64).max(1);
        Self {
            tokens: AtomicU64::new(max),
            max,
            ratio,
        }
    }

    pub(crate) fn failure(&self) {
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_sub(1000))
            });
    }

    pub(crate) fn success(&self) {
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some((t + self.ratio).min(self.max))
            });
    }

    pub(crate) fn allows_retry(&self) -> bool {
        self.tokens.load(Ordering::Acquire) > self.max / 2
    }
}

/// Per-method configuration from a gRPC service config.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct MethodConfig {
    /// `retryPolicy`.
    pub retry_policy: Option<RetryPolicy>,
    /// `waitForReady`.
    pub wait_for_ready: Option<bool>,
}

/// The parts of a gRPC service config the channel uses: per-method `retryPolicy` and
/// `waitForReady`, and `retryThrottling`. Parsed from the service-config JSON:
///
/// ```
/// let config = mtls_tonic::balance::ServiceConfig::from_json(r#"{
///   "methodConfig": [{
///     "name": [{"service": "bookstore.Bookstore"}],
///     "retryPolicy": {
///       "maxAttempts": 3, "initialBackoff": "0.05s", "maxBackoff": "1s",
///       "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]
///     }
///   }],
///   "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1}
/// }"#)?;
/// assert!(config.method("/bookstore.Bookstore/GetBook").retry_policy.is_some());
/// assert!(config.method("/grpc.health.v1.Health/Check").retry_policy.is_none());
/// # Ok::<(), mtls_tonic::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ServiceConfig {
    methods: HashMap<String, MethodConfig>,
    services: HashMap<String, MethodConfig>,
    default: Option<MethodConfig>,
    throttling: Option<RetryThrottling>,
}

impl ServiceConfig {
    /// An empty config.
    pub fn new() -> Self {
        Self::default()
    }

    /// `policy` for every method without a more specific one.
    pub fn retry_all(mut self, policy: RetryPolicy) -> Self {
        self.default
            .get_or_insert_with(MethodConfig::default)
            .retry_policy = Some(policy);
        self
    }

    /// `policy` for every method of `service` (e.g. `bookstore.Bookstore`).
    pub fn retry_service(mut self, service: &str, policy: RetryPolicy) -> Self {
        self.services
            .entry(service.to_owned())
            .or_default()
            .retry_policy = Some(policy);
        self
    }

    /// Retry throttling for the channel.
    pub fn throttling(mut self, throttling: RetryThrottling) -> Self {
        self.throttling = Some(throttling);
        self
    }

    /// The configuration that applies to `path` (`/package.Service/Method`): the method's,
    /// else its service's, else the default.
    pub fn method(&self, path: &str) -> MethodConfig {
        self.lookup(path).cloned().unwrap_or_default()
    }

    fn lookup(&self, path: &str) -> Option<&MethodConfig> {
        if let Some(config) = self.methods.get(path) {
            return Some(config);
        }
        let service = path.trim_start_matches('/').split('/').next().unwrap_or("");
        self.services.get(service).or(self.default.as_ref())
    }

    /// Parses the service-config JSON (`methodConfig[].name[]`, `retryPolicy`,
    /// `waitForReady`, `retryThrottling`; other fields are ignored, as gRPC ignores fields it
    /// does not use).
    pub fn from_json(json: &str) -> Result<Self> {
        let raw: raw::ServiceConfig = serde_json::from_str(json).map_err(|e| invalid(&e))?;
        let mut config = Self::new();
        for method in raw.method_config {
            let parsed = MethodConfig {
                retry_policy: method.retry_policy.map(|p| p.parse()).transpose()?,
                wait_for_ready: method.wait_for_ready,
            };
            for name in method.name {
                match (
                    name.service.as_deref().unwrap_or(""),
                    name.method.as_deref(),
                ) {
                    ("", None | Some("")) => config.default = Some(parsed.clone()),
                    (service, None | Some("")) => {
                        config.services.insert(service.to_owned(), parsed.clone());
                    }
                    ("", Some(method)) => {
                        return Err(invalid(&format!("method {method:?} without a service")));
                    }
                    (service, Some(method)) => {
                        config
                            .methods
                            .insert(format!("/{service}/{method}"), parsed.clone());
                    }
                }
            }
        }
        if let Some(t) = raw.retry_throttling {
            if !(1.0..=1000.0).contains(&t.max_tokens) || t.token_ratio <= 0.0 {
                return Err(invalid(&format!(
                    "retryThrottling maxTokens {} / tokenRatio {}: expected 1..=1000 and > 0",
                    t.max_tokens, t.token_ratio
                )));
            }
            config.throttling = Some(RetryThrottling::new(t.max_tokens as u32, t.token_ratio));
        }
        Ok(config)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.methods.is_empty() && self.services.is_empty() && self.default.is_none()
    }
}

fn invalid(reason: &dyn std::fmt::Display) -> Error {
    Error::InvalidServiceConfig {
        reason: reason.to_string(),
    }
}

/// What the channel keeps: the config and the live throttle.
#[derive(Debug)]
pub(crate) struct Retries {
    pub(crate) config: ServiceConfig,
    pub(crate) throttle: Option<Throttle>,
}

impl Retries {
    pub(crate) fn new(config: ServiceConfig) -> Option<Arc<Self>> {
        if config.is_empty() && config.throttling.is_none() {
            return None;
        }
        let throttle = config.throttling.map(Throttle::new);
        Some(Arc::new(Self { config, throttle }))
    }

    pub(crate) fn lookup(&self, path: &str) -> Option<&MethodConfig> {
        self.config.lookup(path)
    }
}

/// A status code by its gRPC name (`"UNAVAILABLE"`) or number.
fn parse_code(value: &serde_json::Value) -> Result<Code> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    let index = match value {
        serde_json::Value::String(name) => NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
            .and_then(|i| i32::try_from(i).ok()),
        serde_json::Value::Number(n) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .filter(|n| (0..17).contains(n)),
        _ => None,
    };
    match index {
        Some(0) | None => Err(invalid(&format!(
            "retryable status code {value}: expected a non-OK gRPC status name or number"
        ))),
        Some(i) => Ok(Code::from_i32(i)),
    }
}

/// A protobuf JSON duration (`"0.25s"`).
fn parse_duration(field: &str, value: &str) -> Result<Duration> {
    value
        .strip_suffix('s')
        .and_then(|n| n.parse::<f64>().ok())
        .filter(|n| n.is_finite() && *n > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            invalid(&format!(
                "{field} {value:?}: expected a duration like \"0.1s\""
            ))
        })
}

mod raw {
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct ServiceConfig {
        #[serde(default)]
        pub(super) method_config: Vec<MethodConfig>,
        pub(super) retry_throttling: Option<Throttling>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct MethodConfig {
        #[serde(default)]
        pub(super) name: Vec<Name>,
        pub(super) retry_policy: Option<RetryPolicy>,
        pub(super) wait_for_ready: Option<bool>,
    }

    #[derive(Deserialize)]
    pub(super) struct Name {
        pub(super) service: Option<String>,
        pub(super) method: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct RetryPolicy {
        pub(super) max_attempts: u32,
        pub(super) initial_backoff: String,
        pub(super) max_backoff: String,
        pub(super) backoff_multiplier: f64,
        pub(super) retryable_status_codes: Vec<serde_json::Value>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct Throttling {
        pub(super) max_tokens: f64,
        pub(super) token_ratio: f64,
    }
}

impl raw::RetryPolicy {
    fn parse(self) -> Result<RetryPolicy> {
        if self.max_attempts < 2 {
            return Err(invalid(&format!(
                "retryPolicy maxAttempts {}: expected at least 2",
                self.max_attempts
            )));
        }
        if !(self.backoff_multiplier.is_finite() && self.backoff_multiplier > 0.0) {
            return Err(invalid(&format!(
                "retryPolicy backoffMultiplier {}: expected > 0",
                self.backoff_multiplier
            )));
        }
        if self.retryable_status_codes.is_empty() {
            return Err(invalid(
                &"retryPolicy retryableStatusCodes: expected at least one code",
            ));
        }
        let codes = self
            .retryable_status_codes
            .iter()
            .map(parse_code)
            .collect::<Result<Vec<_>>>()?;
        Ok(RetryPolicy::new(self.max_attempts)
            .backoff(
                parse_duration("initialBackoff", &self.initial_backoff)?,
                parse_duration("maxBackoff", &self.max_backoff)?,
                self.backoff_multiplier,
            )
            .retryable(codes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_service_config_shape() {
        let config = ServiceConfig::from_json(
            r#"{"methodConfig":[
                {"name":[{"service":"a.A","method":"M"}],"waitForReady":true,
                 "retryPolicy":{"maxAttempts":9,"initialBackoff":"0.1s","maxBackoff":"2s",
                   "backoffMultiplier":1.5,"retryableStatusCodes":["UNAVAILABLE", 13]}},
                {"name":[{}],"retryPolicy":{"maxAttempts":2,"initialBackoff":"1s",
                   "maxBackoff":"1s","backoffMultiplier":1,"retryableStatusCodes":["aborted"]}}
            ],"retryThrottling":{"maxTokens":10,"tokenRatio":0.1},"loadBalancingConfig":[]}"#,
        )
        .unwrap();
        let m = config.method("/a.A/M");
        let policy = m.retry_policy.unwrap();
        assert_eq!(policy.max_attempts(), 5, "clamped like gRPC");
        assert!(policy.retries(Code::Unavailable) && policy.retries(Code::Internal));
        assert!(!policy.retries(Code::NotFound));
        assert_eq!(m.wait_for_ready, Some(true));
        let other = config.method("/b.B/X").retry_policy.unwrap();
        assert!(other.retries(Code::Aborted) && !other.retries(Code::Unavailable));
    }

    #[test]
    fn rejects_bad_configs_naming_the_field() {
        for (json, needle) in [
            (
                r#"{"methodConfig":[{"name":[{}],"retryPolicy":{"maxAttempts":1,"initialBackoff":"1s","maxBackoff":"1s","backoffMultiplier":1,"retryableStatusCodes":["UNAVAILABLE"]}}]}"#,
                "maxAttempts 1",
            ),
            (
                r#"{"methodConfig":[{"name":[{}],"retryPolicy":{"maxAttempts":2,"initialBackoff":"1","maxBackoff":"1s","backoffMultiplier":1,"retryableStatusCodes":["UNAVAILABLE"]}}]}"#,
                "initialBackoff",
            ),
            (
                r#"{"methodConfig":[{"name":[{}],"retryPolicy":{"maxAttempts":2,"initialBackoff":"1s","maxBackoff":"1s","backoffMultiplier":1,"retryableStatusCodes":["NOPE"]}}]}"#,
                "NOPE",
            ),
            (
                r#"{"retryThrottling":{"maxTokens":0,"tokenRatio":0.1}}"#,
                "maxTokens",
            ),
            ("not json", "service config"),
        ] {
            let err = ServiceConfig::from_json(json).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn throttle_stops_retries_at_half_and_recovers() {
        let throttle = Throttle::new(RetryThrottling::new(10, 0.5));
        assert!(throttle.allows_retry());
        for _ in 0..5 {
            throttle.failure();
        }
        assert!(!throttle.allows_retry(), "5 of 10 tokens left: no retries");
        throttle.success();
        assert!(throttle.allows_retry());
    }

    #[test]
    fn backoff_is_random_below_the_cap() {
        let policy = RetryPolicy::new(5).backoff(
            Duration::from_millis(100),
            Duration::from_millis(300),
            2.0,
        );
        for attempt in 1..5 {
            let cap = [100, 200, 300, 300][attempt as usize - 1];
            for _ in 0..50 {
                assert!(policy.delay(attempt) <= Duration::from_millis(cap));
            }
        }
    }
}
