//! Pieces of Envoy configuration (JSON bootstrap) that several crates' tests write the
//! same way.

use serde_json::{Value, json};

/// The `transport_socket` of a listener's filter chain that serves TLS and requires a
/// client certificate (a `DownstreamTlsContext`), with `common_tls_context` as given.
///
/// ```
/// use serde_json::json;
/// let socket = mtls_test_support::envoy_config::mtls_transport_socket(json!({
///     "alpn_protocols": ["h2"],
/// }));
/// let tls = &socket["typed_config"];
/// assert_eq!(tls["require_client_certificate"], true);
/// assert_eq!(tls["common_tls_context"]["alpn_protocols"][0], "h2");
/// ```
pub fn mtls_transport_socket(common_tls_context: Value) -> Value {
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": true,
            "common_tls_context": common_tls_context,
        }
    })
}
