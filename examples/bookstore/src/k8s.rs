//! Kubernetes manifests for a real cluster, generated from the same [`MeshPolicy`] and
//! Envoy generators as the local mesh; the files in `examples/bookstore/k8s/` are this
//! module's output (a test keeps them equal).
//!
//! - `create-secrets.sh` (run first): makes the PKI, JWT key, JWKS and token with the
//!   `mtls` CLI and stores them as Secrets `bookstore-tls`, `client-tls`, `client-token`
//!   and ConfigMap `bookstore-jwks` — private keys never enter the repository.
//! - `common.yaml`: ServiceAccounts `bookstore` and `client` (the `sa/` of the SPIFFE IDs).
//! - `envoy-sidecars.yaml`: headless Service `bookstore`, ConfigMaps with the Envoy
//!   bootstraps, Deployment `bookstore` (3 replicas, Envoy as a native sidecar: an init
//!   container with `restartPolicy: Always`, Kubernetes ≥ 1.28 — 1.29 enables it by
//!   default), Job `bookstore-client` with its own Envoy sidecar.
//! - `proxyless.yaml`: headless Service, Deployment and client Job without sidecars (mTLS
//!   and JWT in process; `bookstore-server` reloads the mounted Secret and ConfigMap when
//!   the kubelet swaps their `..data` link, with no pod restart).

use std::{net::SocketAddr, path::PathBuf};

use serde_json::{Value, json};

use crate::{
    AUDIENCE, CLIENT_ID, Error, ISSUER, MeshPolicy, Result, SERVER_ID,
    envoy::{CertSource, ClientSidecar, JwksRef, ServerSidecar},
};

/// Where the generated files go, relative to the crate.
pub const K8S_DIR: &str = "k8s";

/// Names and images of the manifests.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct K8sSettings {
    /// Namespace of the Services (for the DNS names clients dial).
    pub namespace: String,
    /// The bookstore image (holding `bookstore-server` and `bookstore-client`).
    pub image: String,
    /// The Envoy image.
    pub envoy_image: String,
    /// Replicas of each Deployment.
    pub replicas: u32,
    /// The mTLS port (sidecar or proxyless server).
    pub port: u16,
    /// The replica's plaintext port behind its sidecar (loopback only).
    pub app_port: u16,
    /// The client sidecar's plaintext port (loopback only).
    pub client_sidecar_port: u16,
    /// Scenario calls the client Jobs make.
    pub calls: usize,
}

impl Default for K8sSettings {
    fn default() -> Self {
        Self {
            namespace: "default".to_owned(),
            image: "bookstore:dev".to_owned(),
            envoy_image: "envoyproxy/envoy:v1.40.0".to_owned(),
            replicas: 3,
            port: 8443,
            app_port: 8080,
            client_sidecar_port: 10000,
            calls: 90,
        }
    }
}

/// Object names shared by the manifests and the secrets script.
pub mod names {
    /// Deployment, headless Service and app label of the sidecar variant.
    pub const BOOKSTORE: &str = "bookstore";
    /// Deployment, headless Service and app label of the proxyless variant.
    pub const BOOKSTORE_PROXYLESS: &str = "bookstore-proxyless";
    /// The client Job (sidecar variant).
    pub const CLIENT_JOB: &str = "bookstore-client";
    /// The client Job (proxyless variant).
    pub const CLIENT_JOB_PROXYLESS: &str = "bookstore-client-proxyless";
    /// ServiceAccount of the bookstore (its SPIFFE ID's `sa/` segment).
    pub const SA_BOOKSTORE: &str = "bookstore";
    /// ServiceAccount of the client.
    pub const SA_CLIENT: &str = "client";
    /// Secret: the bookstore's `cert.pem`, `key.pem`, `bundle.pem`.
    pub const SECRET_BOOKSTORE_TLS: &str = "bookstore-tls";
    /// Secret: the client's `cert.pem`, `key.pem`, `bundle.pem`.
    pub const SECRET_CLIENT_TLS: &str = "client-tls";
    /// Secret: the client's bearer `token`.
    pub const SECRET_CLIENT_TOKEN: &str = "client-token";
    /// ConfigMap: `jwks.json`.
    pub const CONFIGMAP_JWKS: &str = "bookstore-jwks";
    /// ConfigMap: the server sidecar's `envoy.json`.
    pub const CONFIGMAP_SERVER_ENVOY: &str = "bookstore-envoy";
    /// ConfigMap: the client sidecar's `envoy.json`.
    pub const CONFIGMAP_CLIENT_ENVOY: &str = "bookstore-client-envoy";
}

const TLS_DIR: &str = "/etc/bookstore/tls";
const JWKS_DIR: &str = "/etc/bookstore/jwks";
const TOKEN_DIR: &str = "/etc/bookstore/token";
const ENVOY_DIR: &str = "/etc/envoy";

/// The policy as deployed: the same identities, the Service's cluster DNS name.
pub fn policy(settings: &K8sSettings) -> MeshPolicy {
    let mut policy = MeshPolicy::bookstore();
    policy.service_name = service_dns(names::BOOKSTORE, settings);
    policy
}

fn service_dns(service: &str, settings: &K8sSettings) -> String {
    format!("{service}.{}.svc.cluster.local", settings.namespace)
}

/// One generated file.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GeneratedFile {
    /// File name inside [`K8S_DIR`].
    pub name: &'static str,
    /// Contents.
    pub contents: String,
}

/// Every file of `k8s/`.
///
/// ```
/// let files = bookstore::k8s::files(&bookstore::k8s::K8sSettings::default())?;
/// let names: Vec<_> = files.iter().map(|f| f.name).collect();
/// assert_eq!(names, ["common.yaml", "envoy-sidecars.yaml", "proxyless.yaml", "create-secrets.sh"]);
/// assert!(!files.iter().any(|f| f.contents.contains("PRIVATE KEY")));
/// # Ok::<(), bookstore::Error>(())
/// ```
pub fn files(settings: &K8sSettings) -> Result<Vec<GeneratedFile>> {
    Ok(vec![
        GeneratedFile {
            name: "common.yaml",
            contents: yaml(&common(), "ServiceAccounts of the bookstore and its client")?,
        },
        GeneratedFile {
            name: "envoy-sidecars.yaml",
            contents: yaml(
                &envoy_sidecars(settings)?,
                "the bookstore behind Envoy sidecars (native sidecars, Kubernetes >= 1.28)",
            )?,
        },
        GeneratedFile {
            name: "proxyless.yaml",
            contents: yaml(
                &proxyless(settings),
                "the bookstore without sidecars: mTLS and JWT in process; bookstore-server\n# reloads the mounted Secret and ConfigMap when they change, with no pod restart",
            )?,
        },
        GeneratedFile {
            name: "create-secrets.sh",
            contents: create_secrets_script(settings),
        },
    ])
}

fn yaml(documents: &[Value], what: &str) -> Result<String> {
    let mut out = format!(
        "# {what}.\n# Generated by examples/bookstore/src/k8s.rs — do not edit; regenerate with\n\
         #   BOOKSTORE_WRITE_K8S=1 cargo test -p bookstore --test k8s\n"
    );
    for doc in documents {
        out.push_str("---\n");
        out.push_str(
            &serde_yaml_ng::to_string(doc).map_err(|e| Error::Config(format!("YAML: {e}")))?,
        );
    }
    Ok(out)
}

fn common() -> Vec<Value> {
    vec![
        json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": names::SA_BOOKSTORE } }),
        json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": names::SA_CLIENT } }),
    ]
}

fn file_certs() -> CertSource {
    CertSource::Files {
        chain: PathBuf::from(format!("{TLS_DIR}/cert.pem")),
        key: PathBuf::from(format!("{TLS_DIR}/key.pem")),
        bundle: PathBuf::from(format!("{TLS_DIR}/bundle.pem")),
    }
}

fn envoy_sidecars(settings: &K8sSettings) -> Result<Vec<Value>> {
    let policy = policy(settings);
    let admin = SocketAddr::from(([127, 0, 0, 1], 9901));
    let mut server = ServerSidecar::new(
        SocketAddr::from(([0, 0, 0, 0], settings.port)),
        SocketAddr::from(([127, 0, 0, 1], settings.app_port)),
        JwksRef::File(PathBuf::from(format!("{JWKS_DIR}/jwks.json"))),
        file_certs(),
    );
    server.admin = admin;
    let mut client = ClientSidecar::new(
        SocketAddr::from(([127, 0, 0, 1], settings.client_sidecar_port)),
        settings.port,
        file_certs(),
    );
    client.admin = admin;
    let to_json = |v: &Value| {
        serde_json::to_string_pretty(v).map_err(|e| Error::Config(format!("Envoy JSON: {e}")))
    };
    let envoy_container = |config_volume: &str, ports: Value, extra_mounts: Vec<Value>| {
        let mut mounts = vec![
            json!({ "name": config_volume, "mountPath": ENVOY_DIR, "readOnly": true }),
            json!({ "name": "tls", "mountPath": TLS_DIR, "readOnly": true }),
        ];
        mounts.extend(extra_mounts);
        json!({
            "name": "envoy",
            "image": settings.envoy_image,
            // A native sidecar: starts before, and outlives, the app container.
            "restartPolicy": "Always",
            "args": ["-c", format!("{ENVOY_DIR}/envoy.json"), "--disable-hot-restart", "-l", "warning"],
            "ports": ports,
            "volumeMounts": mounts,
        })
    };
    let mut server_envoy = envoy_container(
        "envoy-config",
        json!([{ "name": "grpc-mtls", "containerPort": settings.port }]),
        vec![json!({ "name": "jwks", "mountPath": JWKS_DIR, "readOnly": true })],
    );
    server_envoy["readinessProbe"] =
        json!({ "tcpSocket": { "port": "grpc-mtls" }, "periodSeconds": 5 });
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": names::BOOKSTORE, "labels": { "app": names::BOOKSTORE } },
        "spec": {
            "replicas": settings.replicas,
            "selector": { "matchLabels": { "app": names::BOOKSTORE } },
            "template": {
                "metadata": { "labels": { "app": names::BOOKSTORE } },
                "spec": {
                    "serviceAccountName": names::SA_BOOKSTORE,
                    "initContainers": [server_envoy],
                    "containers": [{
                        "name": "bookstore",
                        "image": settings.image,
                        "command": ["bookstore-server"],
                        "args": ["--plaintext", "--listen", format!("127.0.0.1:{}", settings.app_port)],
                        "env": [replica_name_env()],
                    }],
                    "volumes": [
                        { "name": "envoy-config", "configMap": { "name": names::CONFIGMAP_SERVER_ENVOY } },
                        { "name": "tls", "secret": { "secretName": names::SECRET_BOOKSTORE_TLS } },
                        { "name": "jwks", "configMap": { "name": names::CONFIGMAP_JWKS } },
                    ],
                },
            },
        },
    });
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": { "name": names::CLIENT_JOB },
        "spec": {
            "backoffLimit": 2,
            "template": {
                "metadata": { "labels": { "app": names::CLIENT_JOB } },
                "spec": {
                    "serviceAccountName": names::SA_CLIENT,
                    "restartPolicy": "Never",
                    "initContainers": [envoy_container("envoy-config", json!([]), vec![])],
                    "containers": [{
                        "name": "client",
                        "image": settings.image,
                        "command": ["bookstore-client"],
                        "args": [
                            "--plaintext", format!("127.0.0.1:{}", settings.client_sidecar_port),
                            "--token-file", format!("{TOKEN_DIR}/token"),
                            "--calls", settings.calls.to_string(),
                        ],
                        "volumeMounts": [{ "name": "token", "mountPath": TOKEN_DIR, "readOnly": true }],
                    }],
                    "volumes": [
                        { "name": "envoy-config", "configMap": { "name": names::CONFIGMAP_CLIENT_ENVOY } },
                        { "name": "tls", "secret": { "secretName": names::SECRET_CLIENT_TLS } },
                        { "name": "token", "secret": { "secretName": names::SECRET_CLIENT_TOKEN } },
                    ],
                },
            },
        },
    });
    Ok(vec![
        headless_service(names::BOOKSTORE, settings),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": names::CONFIGMAP_SERVER_ENVOY },
            "data": { "envoy.json": to_json(&server.bootstrap(&policy))? },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": names::CONFIGMAP_CLIENT_ENVOY },
            "data": { "envoy.json": to_json(&client.bootstrap(&policy))? },
        }),
        deployment,
        job,
    ])
}

fn proxyless(settings: &K8sSettings) -> Vec<Value> {
    let target = format!(
        "{}:{}",
        service_dns(names::BOOKSTORE_PROXYLESS, settings),
        settings.port
    );
    let tls_args = |args: &mut Vec<String>| {
        for (flag, file) in [
            ("--ca", "bundle.pem"),
            ("--cert", "cert.pem"),
            ("--key", "key.pem"),
        ] {
            args.push(flag.to_owned());
            args.push(format!("{TLS_DIR}/{file}"));
        }
    };
    let mut server_args = vec!["--listen".to_owned(), format!("0.0.0.0:{}", settings.port)];
    tls_args(&mut server_args);
    server_args.extend(
        [
            "--allow-spiffe-id",
            CLIENT_ID,
            "--jwks",
            &format!("{JWKS_DIR}/jwks.json"),
            "--issuer",
            ISSUER,
            "--audience",
            AUDIENCE,
        ]
        .map(str::to_owned),
    );
    let mut client_args = vec!["--target".to_owned(), target];
    tls_args(&mut client_args);
    client_args.extend(
        [
            "--server-id",
            SERVER_ID,
            "--token-file",
            &format!("{TOKEN_DIR}/token"),
            "--calls",
            &settings.calls.to_string(),
        ]
        .map(str::to_owned),
    );
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": names::BOOKSTORE_PROXYLESS, "labels": { "app": names::BOOKSTORE_PROXYLESS } },
        "spec": {
            "replicas": settings.replicas,
            "selector": { "matchLabels": { "app": names::BOOKSTORE_PROXYLESS } },
            "template": {
                "metadata": { "labels": { "app": names::BOOKSTORE_PROXYLESS } },
                "spec": {
                    "serviceAccountName": names::SA_BOOKSTORE,
                    "containers": [{
                        "name": "bookstore",
                        "image": settings.image,
                        "command": ["bookstore-server"],
                        "args": server_args,
                        "env": [replica_name_env()],
                        "ports": [{ "name": "grpc-mtls", "containerPort": settings.port }],
                        "readinessProbe": { "tcpSocket": { "port": "grpc-mtls" }, "periodSeconds": 5 },
                        "volumeMounts": [
                            { "name": "tls", "mountPath": TLS_DIR, "readOnly": true },
                            { "name": "jwks", "mountPath": JWKS_DIR, "readOnly": true },
                        ],
                    }],
                    "volumes": [
                        { "name": "tls", "secret": { "secretName": names::SECRET_BOOKSTORE_TLS } },
                        { "name": "jwks", "configMap": { "name": names::CONFIGMAP_JWKS } },
                    ],
                },
            },
        },
    });
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": { "name": names::CLIENT_JOB_PROXYLESS },
        "spec": {
            "backoffLimit": 2,
            "template": {
                "metadata": { "labels": { "app": names::CLIENT_JOB_PROXYLESS } },
                "spec": {
                    "serviceAccountName": names::SA_CLIENT,
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "client",
                        "image": settings.image,
                        "command": ["bookstore-client"],
                        "args": client_args,
                        "volumeMounts": [
                            { "name": "tls", "mountPath": TLS_DIR, "readOnly": true },
                            { "name": "token", "mountPath": TOKEN_DIR, "readOnly": true },
                        ],
                    }],
                    "volumes": [
                        { "name": "tls", "secret": { "secretName": names::SECRET_CLIENT_TLS } },
                        { "name": "token", "secret": { "secretName": names::SECRET_CLIENT_TOKEN } },
                    ],
                },
            },
        },
    });
    vec![
        headless_service(names::BOOKSTORE_PROXYLESS, settings),
        deployment,
        job,
    ]
}

fn headless_service(name: &str, settings: &K8sSettings) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "labels": { "app": name } },
        "spec": {
            // Headless: DNS answers with every ready pod's IP, so clients (or their sidecars)
            // balance per call instead of pinning one HTTP/2 connection to one pod.
            "clusterIP": "None",
            "selector": { "app": name },
            "ports": [{ "name": "grpc", "port": settings.port, "targetPort": "grpc-mtls" }],
        },
    })
}

fn replica_name_env() -> Value {
    json!({ "name": "BOOKSTORE_REPLICA_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } })
}

fn create_secrets_script(settings: &K8sSettings) -> String {
    let bookstore_dns = service_dns(names::BOOKSTORE, settings);
    let proxyless_dns = service_dns(names::BOOKSTORE_PROXYLESS, settings);
    format!(
        r#"#!/usr/bin/env bash
# Makes the bookstore's PKI (root -> intermediate -> SVIDs), the JWT signing key, its JWKS
# and the client's token with the `mtls` CLI, and stores them in the cluster as Secrets
# {bookstore_tls}, {client_tls}, {client_token} and ConfigMap {jwks} (private keys never
# enter the repository). Then: kubectl apply -f common.yaml -f envoy-sidecars.yaml
# (and/or -f proxyless.yaml). Envoy reads the JWKS at start: after re-running this
# script, restart the sidecar pods (kubectl rollout restart deployment/{bookstore}); the
# proxyless bookstore-server picks up the new Secrets and JWKS without a restart.
#
# Generated by examples/bookstore/src/k8s.rs — do not edit.
#   MTLS=mtls (default; or: MTLS="cargo run -q --release -p mtls-cli --")  NAMESPACE={namespace}
set -euo pipefail
MTLS="${{MTLS:-mtls}}"
NAMESPACE="${{NAMESPACE:-{namespace}}}"
KUBECTL="${{KUBECTL:-kubectl}}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

$MTLS ca init --out "$work/root" --cn "Bookstore Mesh Root"
$MTLS ca intermediate --ca "$work/root" --out "$work/int" --cn "Bookstore Mesh Issuing"
$MTLS cert issue --ca "$work/int" --out "$work/certs" --name bookstore --profile svid \
    --spiffe-id {server_id} --san {bookstore_dns} --san {proxyless_dns} --ttl 720h
$MTLS cert issue --ca "$work/int" --out "$work/certs" --name client --profile svid \
    --spiffe-id {client_id} --ttl 720h
$MTLS jwt keygen --out "$work/jwt" --name issuer
$MTLS jwt jwks "$work/jwt/issuer.pub.pem" > "$work/jwks.json"
$MTLS jwt mint --key "$work/jwt/issuer-key.pem" --iss {issuer} --aud {audience} \
    --sub {client_id} --ttl 24h > "$work/token"

apply() {{ $KUBECTL -n "$NAMESPACE" "$@" --dry-run=client -o yaml | $KUBECTL -n "$NAMESPACE" apply -f -; }}
apply create secret generic {bookstore_tls} --from-file=cert.pem="$work/certs/bookstore.pem" \
    --from-file=key.pem="$work/certs/bookstore-key.pem" --from-file=bundle.pem="$work/root/ca.pem"
apply create secret generic {client_tls} --from-file=cert.pem="$work/certs/client.pem" \
    --from-file=key.pem="$work/certs/client-key.pem" --from-file=bundle.pem="$work/root/ca.pem"
apply create secret generic {client_token} --from-file=token="$work/token"
apply create configmap {jwks} --from-file=jwks.json="$work/jwks.json"
echo "secrets created in namespace $NAMESPACE"
"#,
        bookstore_tls = names::SECRET_BOOKSTORE_TLS,
        client_tls = names::SECRET_CLIENT_TLS,
        client_token = names::SECRET_CLIENT_TOKEN,
        jwks = names::CONFIGMAP_JWKS,
        bookstore = names::BOOKSTORE,
        namespace = settings.namespace,
        server_id = SERVER_ID,
        client_id = CLIENT_ID,
        issuer = ISSUER,
        audience = AUDIENCE,
    )
}
