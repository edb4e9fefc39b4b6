//! Check names, shared with the tests.

/// Every scenario call succeeded.
pub const SCENARIO: &str = "scenario";
/// Each replica served at least the minimum share.
pub const BALANCE: &str = "balance";
/// The replicas saw the client's SPIFFE ID as the caller.
pub const CALLER: &str = "caller identity";
/// Every hop negotiated the TLS policy's first key-exchange group with one ClientHello
/// (proxyless: the replicas' own handshakes; Envoy: the sidecars' `ssl.curves.*`).
pub const TLS: &str = "key exchange";
/// The intruder's certificate was refused in the handshake.
pub const INTRUDER: &str = "intruder certificate";
/// A call without a token was refused.
pub const NO_TOKEN: &str = "no token";
/// A token for another audience was refused.
pub const WRONG_AUDIENCE: &str = "wrong audience";
/// Agent mode: every SVID the path uses is the one the agent currently issues.
pub const AGENT_IDENTITIES: &str = "agent identities";
/// Agent mode: after a forced rotation mid-scenario the path uses the new serial, and
/// no call failed.
pub const ROTATION: &str = "rotation";
/// Each replica in turn shut down gracefully and came back on the same address while 8
/// callers ran: calls and failed calls (proxyless: none may fail; Envoy: reported).
pub const ROLLING_RESTART: &str = "rolling restart";
/// Calls marked to fail their first attempt (UNAVAILABLE, on purpose) were each retried by
/// the path's retry policy and served.
pub const RETRIES: &str = "retries";
/// `--federation`: each side trusts the other trust domain's CA, as fetched from its
/// bundle endpoint (proxyless: the Workload API sources; Envoy: the sidecars' validation
/// contexts).
pub const FEDERATION: &str = "federation";
/// `--federation`: a workload of the federated `client.local` that the bookstore's policy
/// does not admit was refused in the handshake for its SPIFFE ID.
pub const NEIGHBOUR: &str = "federated, not admitted";
/// `--federation`: a workload of `intruder.local` (valid SVID, unfederated domain) was
/// refused in the handshake: unknown CA.
pub const UNFEDERATED: &str = "unfederated domain";
/// `--federation`: a CA rotation in `bookstore.local` reached `client.local` within one
/// refresh hint (before the bookstore switched to the new CA's SVIDs), the bookstore
/// switched, and no call failed.
pub const CA_ROTATION: &str = "CA rotation";
