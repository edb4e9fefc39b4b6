//! Interleaved A/B comparisons for the ratio goals that criterion measures one side after
//! the other (JWT validation vs raw jsonwebtoken, leaf issuance vs raw rcgen).
//!
//! On a shared machine the load drifts between criterion's two benchmarks, and a 20 %
//! swing in a ratio is common. Here each round times a batch of A then a batch of B (the
//! order alternating between rounds), so both sides see the same load; the ratio reported
//! is the median of the per-round ratios.

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One interleaved comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AbResult {
    /// What is compared (`jwt_es256_uncached`, `leaf_issuance_p256`, ...).
    pub name: String,
    /// Our side's label.
    pub ours: String,
    /// The baseline's label.
    pub baseline: String,
    /// Median time per operation, ours, ns.
    pub ours_ns: f64,
    /// Median time per operation, baseline, ns.
    pub baseline_ns: f64,
    /// Median over rounds of (baseline time / our time): above 1, ours is faster.
    pub speed_ratio: f64,
    /// Smallest and largest per-round ratio.
    pub ratio_range: (f64, f64),
    /// Rounds measured.
    pub rounds: usize,
    /// Operations per batch.
    pub batch: usize,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Runs `rounds` interleaved rounds of `ours` and `baseline`, each a batch sized to take
/// about `batch_time`.
pub fn compare(
    name: &str,
    (ours_label, mut ours): (&str, &mut dyn FnMut()),
    (baseline_label, mut baseline): (&str, &mut dyn FnMut()),
    rounds: usize,
    batch_time: Duration,
) -> AbResult {
    // Size the batch from a short calibration of the baseline (warms both up too).
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed() < batch_time / 2 || n < 3 {
        baseline();
        ours();
        n += 1;
    }
    let per_pair = start.elapsed().as_secs_f64() / n as f64;
    let batch = ((batch_time.as_secs_f64() / (per_pair / 2.0)) as usize).max(1);

    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..batch {
            f();
        }
        t.elapsed().as_secs_f64() * 1e9 / batch as f64
    };
    let (mut a, mut b, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds.max(1) {
        let (ta, tb) = if round % 2 == 0 {
            let ta = time(&mut ours);
            (ta, time(&mut baseline))
        } else {
            let tb = time(&mut baseline);
            (time(&mut ours), tb)
        };
        a.push(ta);
        b.push(tb);
        ratios.push(tb / ta);
    }
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    AbResult {
        name: name.to_owned(),
        ours: ours_label.to_owned(),
        baseline: baseline_label.to_owned(),
        ours_ns: median(&mut a),
        baseline_ns: median(&mut b),
        speed_ratio: median(&mut ratios),
        ratio_range: (lo, hi),
        rounds: rounds.max(1),
        batch,
    }
}

fn setup(what: &str) -> impl FnOnce(String) -> Error + '_ {
    move |e| Error::Pki(format!("{what}: {e}"))
}

/// JWT validation without a token cache: mtls-jwt's `Validator` vs `jsonwebtoken::decode`,
/// same key (from the same JWK), same token, same checks (iss, aud, exp).
pub fn jwt(
    alg: mtls_jwt::Algorithm,
    raw_alg: jsonwebtoken::Algorithm,
    rounds: usize,
    batch_time: Duration,
) -> Result<AbResult> {
    use mtls_jwt::{JwksSource, SigningKey, TokenSpec, Validator};
    let key = SigningKey::generate(alg).map_err(|e| setup("JWT key")(e.to_string()))?;
    let token = key
        .mint(
            &TokenSpec::new(Duration::from_secs(3600))
                .issuer("https://issuer.test")
                .audience("bookstore")
                .subject("spiffe://example.org/client"),
        )
        .map_err(|e| setup("minting")(e.to_string()))?;
    let validator = Validator::builder()
        .jwks(JwksSource::inline(mtls_jwt::jwks_json([key.jwk(None)])))
        .issuer("https://issuer.test")
        .audience("bookstore")
        .token_cache(0)
        .build()
        .map_err(|e| setup("validator")(e.to_string()))?;
    let jwk: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(key.jwk(None)).map_err(|e| setup("JWK")(e.to_string()))?;
    let decoding =
        jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|e| setup("JWK")(e.to_string()))?;
    let mut validation = jsonwebtoken::Validation::new(raw_alg);
    validation.set_issuer(&["https://issuer.test"]);
    validation.set_audience(&["bookstore"]);
    // Both sides must accept the token, or the comparison means nothing.
    validator
        .validate_now(&token)
        .map_err(|e| setup("mtls-jwt refused the token")(e.to_string()))?;
    jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation)
        .map_err(|e| setup("jsonwebtoken refused the token")(e.to_string()))?;
    Ok(compare(
        &format!("jwt_{}_uncached", alg.as_str().to_ascii_lowercase()),
        ("mtls_jwt::Validator", &mut || {
            let _ = black_box(validator.validate_now(black_box(&token)));
        }),
        ("jsonwebtoken::decode", &mut || {
            let _ = black_box(jsonwebtoken::decode::<serde_json::Value>(
                black_box(&token),
                &decoding,
                &validation,
            ));
        }),
        rounds,
        batch_time,
    ))
}

/// P-256 leaf issuance: mtls-certs vs raw rcgen doing the same work (fresh key, same SANs,
/// KU/EKU, AKI, signed by a P-256 CA) — the pair of `mtls-certs/benches/issuance.rs`.
pub fn issuance(rounds: usize, batch_time: Duration) -> Result<AbResult> {
    use mtls_certs::{CaParams, CertificateAuthority, LeafParams};
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose,
    };
    const SANS: [&str; 2] = ["bench.internal", "127.0.0.1"];
    let ca = CertificateAuthority::new_root(&CaParams::new("Bench Root"))
        .map_err(|e| setup("CA")(e.to_string()))?;
    let params = LeafParams::server(SANS);
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| setup("rcgen")(e.to_string()))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let issuer = Issuer::new(
        ca_params,
        KeyPair::generate().map_err(|e| setup("rcgen")(e.to_string()))?,
    );
    ca.issue(&params)
        .map_err(|e| setup("mtls-certs")(e.to_string()))?;
    Ok(compare(
        "leaf_issuance_p256",
        ("mtls_certs", &mut || {
            let _ = black_box(ca.issue(black_box(&params)));
        }),
        ("raw_rcgen", &mut || {
            let Ok(key) = KeyPair::generate() else { return };
            let Ok(mut p) = CertificateParams::new(SANS.map(String::from).to_vec()) else {
                return;
            };
            p.is_ca = IsCa::ExplicitNoCa;
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            p.use_authority_key_identifier_extension = true;
            let _ = black_box((p.signed_by(&key, &issuer), key));
        }),
        rounds,
        batch_time,
    ))
}

/// Every comparison, as `bench.sh` runs them.
pub fn all(rounds: usize, batch_time: Duration) -> Result<Vec<AbResult>> {
    Ok(vec![
        jwt(
            mtls_jwt::Algorithm::ES256,
            jsonwebtoken::Algorithm::ES256,
            rounds,
            batch_time,
        )?,
        jwt(
            mtls_jwt::Algorithm::RS256,
            jsonwebtoken::Algorithm::RS256,
            rounds,
            batch_time,
        )?,
        issuance(rounds, batch_time)?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slower_side_shows_in_the_ratio() {
        let spin = |n: u64| {
            let mut x = 0u64;
            for i in 0..n {
                x = black_box(x.wrapping_add(i));
            }
            black_box(x);
        };
        let r = compare(
            "spin",
            ("fast", &mut || spin(1_000)),
            ("slow", &mut || spin(4_000)),
            6,
            Duration::from_millis(5),
        );
        assert_eq!(r.rounds, 6);
        assert!(r.speed_ratio > 1.5, "{r:?}");
        assert!(r.ratio_range.0 <= r.speed_ratio && r.speed_ratio <= r.ratio_range.1);
        assert!(r.baseline_ns > r.ours_ns);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn real_pairs_run() {
        let r = jwt(
            mtls_jwt::Algorithm::ES256,
            jsonwebtoken::Algorithm::ES256,
            2,
            Duration::from_millis(5),
        )
        .unwrap();
        assert!(r.speed_ratio > 0.0 && r.ours_ns > 0.0, "{r:?}");
        let r = issuance(2, Duration::from_millis(5)).unwrap();
        assert!(r.speed_ratio > 0.0, "{r:?}");
    }
}
