//! What mtls-jwt counts, through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`, off by default): Envoy `jwt_authn`'s statistics, from the validator itself.
//!
//! The library links only the facade; the application installs a recorder (Prometheus text
//! with `metrics-exporter-prometheus`, an OpenTelemetry bridge, ...) — why this facade: see
//! `mtls_core::metrics`. Without the feature every function here is an empty `#[inline]`
//! body. gRPC defines no JWT metrics, so the names are ours, under `mtls.jwt.`:
//!
//! | metric (labels) | kind | Envoy `jwt_authn` |
//! |---|---|---|
//! | `mtls.jwt.allowed` | counter | `allowed` |
//! | `mtls.jwt.denied` (`reason`: the Envoy failure message, `"Jwt is expired"`) | counter | `denied` (the reason is in Envoy's response body and log) |
//! | `mtls.jwt.cache.lookups` (`result` = `hit`/`miss`) | counter | `jwt_cache_hit`, `jwt_cache_miss` |
//! | `mtls.jwt.jwks.fetches` (`result` = `success`/`failure`, `mtls.jwt.jwks`: the URL) | counter | `jwks_fetch_success`, `jwks_fetch_failed` |
//! | `mtls.jwt.jwks.keys` (`state` = `loaded`/`skipped`, `mtls.jwt.jwks`: URL, file or `inline JWKS`) | gauge | — (Envoy logs skipped keys) |
//!
//! **What counts once.** Each verdict a caller gets counts once in `allowed` or `denied`:
//! [`Validator::validate`](crate::Validator::validate) (however many key lookups and
//! refetches it takes), [`validate_now`](crate::Validator::validate_now),
//! [`validate_cached`](crate::Validator::validate_cached) when it answers, and
//! [`find_token`](crate::Validator::find_token) /
//! [`validate_headers`](crate::Validator::validate_headers) finding no token
//! (`"Jwt is missing"`). A cache lookup counts once per verdict too (a `validate_cached`
//! that does not answer leaves the lookup to the `validate` that follows), and only when
//! the cache is on. `mtls.jwt.jwks.keys` shows the key set in use: `loaded` keys verify
//! tokens, `skipped` ones (unparsable, weak RSA, not for signatures) were left out.
//!
//! ```
//! use mtls_jwt::metrics::{DENIED, REASON};
//! // Prometheus shows it as mtls_jwt_denied{reason="Jwt is expired"}.
//! assert_eq!((DENIED, REASON), ("mtls.jwt.denied", "reason"));
//! mtls_jwt::metrics::describe(); // help texts; a no-op without a recorder
//! ```

use crate::error::{Error, Result};

/// Counter `mtls.jwt.allowed`: tokens accepted (Envoy `jwt_authn.allowed`).
pub const ALLOWED: &str = "mtls.jwt.allowed";
/// Counter `mtls.jwt.denied`: tokens refused, by [`REASON`] (Envoy `jwt_authn.denied`).
pub const DENIED: &str = "mtls.jwt.denied";
/// Label of [`DENIED`]: [`Error::envoy_message`] (`"Jwt is expired"`, `"Jwt is missing"`).
pub const REASON: &str = "reason";
/// Counter `mtls.jwt.cache.lookups`: verified-token cache lookups, by [`RESULT`] `hit` or
/// `miss` (Envoy `jwt_cache_hit` / `jwt_cache_miss`).
pub const CACHE_LOOKUPS: &str = "mtls.jwt.cache.lookups";
/// Counter `mtls.jwt.jwks.fetches`: remote JWKS fetches, by [`RESULT`] `success` or
/// `failure` and [`JWKS`] (Envoy `jwks_fetch_success` / `jwks_fetch_failed`).
pub const JWKS_FETCHES: &str = "mtls.jwt.jwks.fetches";
/// Gauge `mtls.jwt.jwks.keys`: keys of the JWKS in use, by [`STATE`] and [`JWKS`].
pub const JWKS_KEYS: &str = "mtls.jwt.jwks.keys";
/// Label of [`CACHE_LOOKUPS`] and [`JWKS_FETCHES`].
pub const RESULT: &str = "result";
/// Label of [`JWKS_KEYS`]: `loaded` (usable) or `skipped` (left out).
pub const STATE: &str = "state";
/// Label of [`JWKS_FETCHES`] and [`JWKS_KEYS`]: the JWKS source (URL, file path,
/// `inline JWKS`, `key set`).
pub const JWKS: &str = "mtls.jwt.jwks";

/// Every metric name of this crate (for dashboards and alert rules to check against).
pub const NAMES: [&str; 5] = [ALLOWED, DENIED, CACHE_LOOKUPS, JWKS_FETCHES, JWKS_KEYS];

/// Describes every metric of this crate to the installed recorder (the `# HELP` lines of
/// a Prometheus scrape). Call once after installing the recorder; a no-op without the
/// feature.
pub fn describe() {
    #[cfg(feature = "metrics")]
    {
        use ::metrics::{describe_counter, describe_gauge};
        describe_counter!(ALLOWED, "JWTs accepted (Envoy jwt_authn.allowed)");
        describe_counter!(
            DENIED,
            "JWTs refused, by reason (the Envoy jwt_authn failure message)"
        );
        describe_counter!(
            CACHE_LOOKUPS,
            "Verified-token cache lookups, by result hit/miss (Envoy jwt_cache_hit/miss)"
        );
        describe_counter!(
            JWKS_FETCHES,
            "Remote JWKS fetches, by result success/failure (Envoy jwks_fetch_success/failed)"
        );
        describe_gauge!(
            JWKS_KEYS,
            "Keys of the JWKS in use, by state loaded (usable) / skipped (left out)"
        );
    }
}

/// One verdict given to a caller.
#[inline]
pub(crate) fn verdict<T>(result: &Result<T>) {
    #[cfg(feature = "metrics")]
    match result {
        Ok(_) => ::metrics::counter!(ALLOWED).increment(1),
        Err(error) => denied(error),
    }
    #[cfg(not(feature = "metrics"))]
    let _ = result;
}

/// One refusal (no token found, or a token refused).
#[inline]
pub(crate) fn denied(error: &Error) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(DENIED, REASON => error.envoy_message()).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = error;
}

/// One verified-token cache lookup.
#[inline]
pub(crate) fn cache_lookup(hit: bool) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(CACHE_LOOKUPS, RESULT => if hit { "hit" } else { "miss" }).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = hit;
}

/// One remote JWKS fetch that ended (its keys may equal the ones in use).
#[cfg(feature = "remote")]
#[inline]
pub(crate) fn jwks_fetch(source: &str, ok: bool) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(JWKS_FETCHES, RESULT => if ok { "success" } else { "failure" },
        JWKS => source.to_owned())
    .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (source, ok);
}

/// A key set put in use: `loaded` usable keys, `skipped` left out.
#[inline]
pub(crate) fn jwks_keys(source: &str, loaded: usize, skipped: usize) {
    #[cfg(feature = "metrics")]
    {
        // Key counts are far below 2^53: exact as f64.
        #[allow(clippy::cast_precision_loss)]
        let (loaded, skipped) = (loaded as f64, skipped as f64);
        ::metrics::gauge!(JWKS_KEYS, STATE => "loaded", JWKS => source.to_owned()).set(loaded);
        ::metrics::gauge!(JWKS_KEYS, STATE => "skipped", JWKS => source.to_owned()).set(skipped);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (source, loaded, skipped);
}
