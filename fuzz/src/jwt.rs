//! JWT decode + validate against a fixed JWKS.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mtls_jwt::{Algorithm, Claims, JwksSource, SigningKey, Validator, jwks_json};
use serde_json::{Map, Value};

const ISSUER: &str = "https://issuer.fuzz";
const AUDIENCE: &str = "fuzz";
const MAX_LIFETIME: u64 = 3600;
const SKEW: i64 = 60;

struct Fixture {
    /// ES256 `es`, EdDSA `ed`, RSA `rs`: the private halves of the JWKS.
    keys: Vec<(SigningKey, &'static str)>,
    /// Validators over one JWKS, differing in what they demand (see [`validator_for`]).
    validators: Vec<Validator>,
}

/// Keys are made once per process: the JWKS is fixed for a run (no private key on disk).
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let key = |alg| SigningKey::generate(alg).expect("key generation");
        let keys = vec![
            (key(Algorithm::ES256), "es"),
            (key(Algorithm::EdDSA), "ed"),
            (key(Algorithm::RS256), "rs"),
        ];
        let mut jwks: Vec<Value> = keys.iter().map(|(k, kid)| k.jwk(Some(kid))).collect();
        // The same ES key again without `alg`, a key for encryption only, a duplicate kid.
        let mut no_alg = keys[0].0.jwk(Some("es-any"));
        no_alg.as_object_mut().map(|o| o.remove("alg"));
        jwks.push(no_alg);
        let mut enc = keys[0].0.jwk(Some("enc"));
        enc["use"] = "enc".into();
        jwks.push(enc);
        jwks.push(keys[1].0.jwk(Some("es")));
        let jwks = jwks_json(jwks);
        let base = || {
            Validator::builder()
                .jwks(JwksSource::inline(jwks.clone()))
                .issuer(ISSUER)
                .audience(AUDIENCE)
        };
        let validators = vec![
            base().build().expect("validator"),
            base()
                .max_lifetime(Duration::from_secs(MAX_LIFETIME))
                .require_typ(["JWT"])
                .build()
                .expect("validator"),
            Validator::builder()
                .jwks(JwksSource::inline(jwks.clone()))
                .jwt_svid(AUDIENCE)
                .build()
                .expect("validator"),
            base()
                .check("scope has read", |c| match c.get("scope") {
                    Some(Value::String(s)) if s.split(' ').any(|x| x == "read") => Ok(()),
                    _ => Err("no read scope".into()),
                })
                .token_cache(0)
                .build()
                .expect("validator"),
        ];
        Fixture { keys, validators }
    })
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `data` = a mode byte, then:
///
/// - mode even: a raw token, validated as is. Nobody holds the private keys but this
///   process, so every raw token must be refused — whatever its header claims.
/// - mode odd: `header NUL payload`; the harness signs `b64(header).b64(payload)` itself
///   with one of the JWKS keys (mode / 2 picks key and validator), so the fuzzer reaches
///   the claim checks. What is accepted must satisfy every rule the validator promises.
pub fn jwt(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let fx = fixture();
    let pick = usize::from(mode / 2);
    let validator = &fx.validators[pick % fx.validators.len()];
    if mode % 2 == 0 {
        let token = String::from_utf8_lossy(rest);
        let result = validator.validate_now(&token);
        assert!(
            result.is_err(),
            "a token nobody signed was accepted: {token:?}"
        );
        if let Err(e) = result {
            // The status mapping is total and the message is one of Envoy's.
            assert!(matches!(e.http_status(), 401 | 403), "{e}");
            assert!(!e.envoy_message().is_empty());
        }
        return;
    }
    let (header, payload) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let (key, _) = &fx.keys[(pick / fx.validators.len()) % fx.keys.len()];
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = key.sign(message.as_bytes()).expect("signing");
    let token = format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature));
    let before = now();
    let first = validator.validate_now(&token);
    let second = validator.validate_now(&token);
    match (&first, &second) {
        (Ok(a), Ok(b)) => assert!(a == b, "a cached verdict differs"),
        // Same failure; the text may differ by the clock ("before now ...").
        (Err(a), Err(b)) => {
            assert_eq!(a.envoy_message(), b.envoy_message());
            assert_eq!(a.http_status(), b.http_status());
        }
        _ => panic!("validating twice gave {first:?} then {second:?}"),
    }
    if let Ok(claims) = first {
        accepted(
            pick % fx.validators.len(),
            key,
            header,
            payload,
            &claims,
            before,
        );
    }
}

/// What an accepted, harness-signed token must look like.
fn accepted(
    validator: usize,
    key: &SigningKey,
    header: &[u8],
    payload: &[u8],
    claims: &Claims,
    before: i64,
) {
    let after = now();
    // Issue 13 item 5 (a JSON array header was read by position); `seeds/jwt/signed-array`.
    let header: Map<String, Value> = serde_json::from_slice(header)
        .unwrap_or_else(|e| panic!("accepted a header that is not a JSON object: {e}"));
    let payload: Map<String, Value> = serde_json::from_slice(payload)
        .unwrap_or_else(|e| panic!("accepted a payload that is not a JSON object: {e}"));
    assert_eq!(claims.as_map(), &payload);
    assert_eq!(
        claims.algorithm(),
        key.algorithm(),
        "alg of the signing key"
    );
    assert_eq!(
        header.get("alg").and_then(Value::as_str),
        Some(key.algorithm().as_str())
    );
    assert!(header.get("crit").is_none(), "crit is never understood");
    assert!(!claims.algorithm().is_hmac());

    let exp = claims.expires_at().expect("exp is required");
    assert!(
        exp.saturating_add(SKEW) >= before,
        "expired: exp {exp}, now {before}"
    );
    if let Some(nbf) = claims.not_before() {
        assert!(
            nbf <= after.saturating_add(SKEW),
            "not yet valid: nbf {nbf}"
        );
    }
    assert!(claims.audiences().iter().any(|a| a == AUDIENCE), "aud");
    match validator {
        2 => {
            let sub = claims.subject().expect("JWT-SVIDs have sub");
            assert!(claims.spiffe_id().is_some(), "sub {sub:?} is a SPIFFE ID");
            // As strictly as go-spiffe's jwtsvid (spiffeid.FromString): canonical form only.
            if let Err(e) = mtls_certs::SpiffeId::new(sub) {
                panic!("JWT-SVID accepted with sub {sub:?}: {e}");
            }
            assert_ne!(
                key.algorithm(),
                Algorithm::EdDSA,
                "JWT-SVIDs are RS/ES/PS only"
            );
        }
        1 => {
            let typ = header
                .get("typ")
                .and_then(Value::as_str)
                .expect("typ required");
            assert!(typ.eq_ignore_ascii_case("JWT"), "typ {typ:?}");
            let iat = claims.issued_at();
            // Issue 13 item 4 (a future iat stretched max_lifetime); `seeds/jwt/signed-typ`.
            if let Some(iat) = iat {
                assert!(
                    iat <= after.saturating_add(SKEW),
                    "iat {iat} is in the future"
                );
            }
            let start = iat.map_or(before, |iat| iat.min(after));
            assert!(
                exp.saturating_sub(start) <= MAX_LIFETIME as i64,
                "lifetime from {start} to {exp} is over {MAX_LIFETIME} s"
            );
        }
        3 => {
            let scope = claims.get("scope").and_then(Value::as_str).expect("scope");
            assert!(
                scope.split(' ').any(|s| s == "read"),
                "custom check skipped"
            );
        }
        _ => {}
    }
    if validator != 2 {
        assert_eq!(claims.issuer(), Some(ISSUER));
    }
}
