//! Replays every committed seed (`seeds/<target>/`) through its target body, on stable,
//! and runs inputs generated here with real keys (certificates, CSRs, JWKS) that are not
//! committed because they are made at test time.
//!
//! With `MTLS_FUZZ_WRITE_CORPUS=1` the generated inputs are also written to
//! `corpus/<target>/` (git-ignored), the working corpus `cargo fuzz run` starts from.

use std::fs;
use std::path::{Path, PathBuf};

use mtls_certs::{
    CaParams, CertificateAuthority, CertificateSigningRequest, CsrParams, KeyAlgorithm, LeafParams,
    Subject, SubjectAltName,
};
use mtls_jwt::{Algorithm, SigningKey, jwks_json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.is_file());
    files.sort();
    files
}

#[test]
fn every_target_has_seeds_and_a_binary() {
    for (name, _) in mtls_fuzz::TARGETS {
        assert!(
            !files(&root().join("seeds").join(name)).is_empty(),
            "no seeds for {name}"
        );
        assert!(
            root()
                .join("fuzz_targets")
                .join(format!("{name}.rs"))
                .exists(),
            "no fuzz_targets/{name}.rs"
        );
    }
    let binaries = files(&root().join("fuzz_targets")).len();
    assert_eq!(
        binaries,
        mtls_fuzz::TARGETS.len(),
        "a target is missing from TARGETS"
    );
}

#[test]
fn committed_seeds_replay_without_a_crash() {
    let mut crashed = Vec::new();
    for (name, target) in mtls_fuzz::TARGETS {
        for seed in files(&root().join("seeds").join(name)) {
            let data = fs::read(&seed).unwrap();
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                crashed.push(format!("{name}: {}", seed.display()));
            }
        }
    }
    assert!(crashed.is_empty(), "crashes:\n{}", crashed.join("\n"));
}

/// Inputs with real keys and signatures, so the targets get past the parsers' first checks.
fn generated() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut add = |target, name: &str, data: Vec<u8>| out.push((target, name.to_owned(), data));

    let root = CertificateAuthority::new_root(&CaParams::new("Seed Root")).unwrap();
    let intermediate = root
        .new_intermediate(&CaParams::new("Seed Intermediate"))
        .unwrap();
    let svid = intermediate
        .issue(&LeafParams::svid(
            "spiffe://example.org/ns/a/sa/b".parse().unwrap(),
        ))
        .unwrap();
    let server = root
        .issue(&LeafParams::server(["api.example.com", "127.0.0.1", "::1"]))
        .unwrap();
    let pem_of = |s: String| [vec![0u8], s.into_bytes()].concat();
    add("pem", "chain", pem_of(svid.chain_pem()));
    add("pem", "server", pem_of(server.cert_pem()));
    add("pem", "root", pem_of(root.cert_pem()));
    add(
        "pem",
        "svid-der",
        [vec![1u8], svid.cert_der().to_vec()].concat(),
    );
    add(
        "pem",
        "server-der",
        [vec![1u8], server.cert_der().to_vec()].concat(),
    );

    let rsa = KeyAlgorithm::rsa(2048).unwrap();
    for (name, alg, sans) in [
        (
            "svid",
            KeyAlgorithm::default(),
            vec![SubjectAltName::Uri("spiffe://example.org/w".into())],
        ),
        (
            "foreign",
            KeyAlgorithm::Ed25519,
            vec![SubjectAltName::Uri("spiffe://evil.org/w".into())],
        ),
        (
            "server",
            rsa,
            vec![
                SubjectAltName::Dns("api.example.com".into()),
                SubjectAltName::classify("10.0.0.7").unwrap(),
            ],
        ),
    ] {
        let mut params = CsrParams::new(Subject::common_name(name)).key_algorithm(alg);
        params.sans = sans;
        let (csr, _key) = CertificateSigningRequest::generate(&params).unwrap();
        add("csr", name, [vec![0u8], csr.der().to_vec()].concat());
        add(
            "csr",
            &format!("{name}-pem"),
            [vec![1u8], csr.pem().into_bytes()].concat(),
        );
    }
    let (ca_csr, _) = CertificateSigningRequest::generate(
        &CsrParams::new(Subject::common_name("ca")).requesting_ca(),
    )
    .unwrap();
    add("csr", "ca", [vec![0u8], ca_csr.der().to_vec()].concat());

    let keys: Vec<SigningKey> = [
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::ES512,
        Algorithm::EdDSA,
        Algorithm::PS256,
    ]
    .into_iter()
    .map(|alg| SigningKey::generate(alg).unwrap())
    .collect();
    add(
        "jwks",
        "generated",
        jwks_json(keys.iter().map(|k| k.jwk(None))).into_bytes(),
    );
    let rsa_root = CertificateAuthority::new_root(
        &CaParams::new("Seed RSA Root").key_algorithm(KeyAlgorithm::rsa(2048).unwrap()),
    )
    .unwrap();
    let bundle = mtls_core::SpiffeBundle::new("example.org".parse().unwrap())
        .add_x509_authorities_pem(root.cert_pem() + &rsa_root.cert_pem())
        .unwrap()
        .add_jwks_json(&jwks_json(keys.iter().map(|k| k.jwk(None))))
        .unwrap()
        .spiffe_sequence(7);
    add("spiffe_bundle", "generated", bundle.to_json().into_bytes());
    for key in &keys {
        let der = rustls_der(&key.public_pem());
        add("spki", &format!("{}", key.algorithm()), der);
        add(
            "pem",
            &format!("public-{}", key.algorithm()),
            pem_of(key.public_pem()),
        );
    }
    out
}

fn rustls_der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::SubjectPublicKeyInfoDer;
    use rustls_pki_types::pem::PemObject;
    SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[test]
fn generated_inputs_replay_without_a_crash() {
    let write = std::env::var_os("MTLS_FUZZ_WRITE_CORPUS").is_some();
    for (target, name, data) in generated() {
        let (_, body) = mtls_fuzz::TARGETS
            .iter()
            .find(|(n, _)| *n == target)
            .unwrap();
        body(&data);
        if write {
            let dir = root().join("corpus").join(target);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(format!("gen-{name}")), &data).unwrap();
        }
    }
}
