//! The Kubernetes files in `examples/bookstore/k8s/` are exactly what `bookstore::k8s`
//! generates, parse, carry the required fields, and every name they refer to exists.
//! `BOOKSTORE_WRITE_K8S=1 cargo test -p bookstore --test k8s` rewrites them.

// Helpers outside #[test] fns: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use bookstore::k8s::{self, K8sSettings, names};
use serde::Deserialize;
use serde_json::Value;

fn k8s_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(k8s::K8S_DIR)
}

#[test]
fn committed_k8s_files_are_the_generated_ones() {
    let files = k8s::files(&K8sSettings::default()).unwrap();
    let write = std::env::var("BOOKSTORE_WRITE_K8S").as_deref() == Ok("1");
    for file in &files {
        let path = k8s_dir().join(file.name);
        if write {
            std::fs::create_dir_all(k8s_dir()).unwrap();
            std::fs::write(&path, &file.contents).unwrap();
            #[cfg(unix)]
            if file.name.ends_with(".sh") {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; regenerate with BOOKSTORE_WRITE_K8S=1 cargo test -p bookstore --test k8s",
                path.display()
            )
        });
        assert!(
            committed == file.contents,
            "{} differs from what bookstore::k8s generates; regenerate with \
             BOOKSTORE_WRITE_K8S=1 cargo test -p bookstore --test k8s",
            path.display()
        );
    }
    // Nothing else (and no private key) in the directory.
    let mut present: Vec<String> = std::fs::read_dir(k8s_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    let mut expected: Vec<String> = files.iter().map(|f| f.name.to_owned()).collect();
    expected.sort();
    assert_eq!(present, expected);
    for file in &files {
        assert!(!file.contents.contains("PRIVATE KEY"), "{}", file.name);
    }
}

/// Every document of every committed YAML file.
fn documents() -> Vec<(String, Value)> {
    let mut docs = Vec::new();
    for name in ["common.yaml", "envoy-sidecars.yaml", "proxyless.yaml"] {
        let text = std::fs::read_to_string(k8s_dir().join(name)).unwrap();
        for de in serde_yaml_ng::Deserializer::from_str(&text) {
            let doc = Value::deserialize(de).unwrap_or_else(|e| panic!("{name}: {e}"));
            docs.push((name.to_owned(), doc));
        }
    }
    docs
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("missing {pointer} in {v}"))
}

/// Objects the secrets script creates: `apply create secret generic NAME` / `configmap NAME`.
fn script_objects() -> BTreeSet<(String, String)> {
    let script = std::fs::read_to_string(k8s_dir().join("create-secrets.sh")).unwrap();
    let mut objects = BTreeSet::new();
    for line in script.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["apply", "create", "secret", "generic", name, ..] => {
                objects.insert(("Secret".to_owned(), (*name).to_owned()));
            }
            ["apply", "create", "configmap", name, ..] => {
                objects.insert(("ConfigMap".to_owned(), (*name).to_owned()));
            }
            _ => {}
        }
    }
    objects
}

#[test]
fn k8s_manifests_parse_have_required_fields_and_consistent_references() {
    let docs = documents();
    let mut objects: BTreeSet<(String, String)> = script_objects();
    assert!(objects.contains(&("Secret".into(), names::SECRET_BOOKSTORE_TLS.into())));
    assert!(objects.contains(&("ConfigMap".into(), names::CONFIGMAP_JWKS.into())));
    let mut by_kind: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for (file, doc) in &docs {
        let kind = str_at(doc, "/kind");
        let name = str_at(doc, "/metadata/name");
        assert!(
            doc.get("apiVersion").is_some(),
            "{file}: {kind}/{name} without apiVersion"
        );
        assert!(
            objects.insert((kind.to_owned(), name.to_owned())),
            "{file}: {kind}/{name} defined twice"
        );
        by_kind.entry(kind.to_owned()).or_default().push(doc);
    }
    let exists = |kind: &str, name: &str| objects.contains(&(kind.to_owned(), name.to_owned()));

    // Services: headless, selecting a Deployment's pods, targeting a named container port.
    let workloads: Vec<&Value> = by_kind["Deployment"]
        .iter()
        .chain(&by_kind["Job"])
        .copied()
        .collect();
    for svc in &by_kind["Service"] {
        let name = str_at(svc, "/metadata/name");
        assert_eq!(
            str_at(svc, "/spec/clusterIP"),
            "None",
            "Service {name} must be headless"
        );
        let selector = svc.pointer("/spec/selector").unwrap();
        let deployment = by_kind["Deployment"]
            .iter()
            .find(|d| d.pointer("/spec/template/metadata/labels") == Some(selector))
            .unwrap_or_else(|| panic!("Service {name}: no Deployment has labels {selector}"));
        let target = str_at(svc, "/spec/ports/0/targetPort");
        let spec = deployment.pointer("/spec/template/spec").unwrap();
        let named_ports: Vec<&str> = containers(spec)
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
            .map(|p| str_at(p, "/name"))
            .collect();
        assert!(
            named_ports.contains(&target),
            "Service {name}: port {target} not in {named_ports:?}"
        );
    }

    // Deployments: 3 replicas, selector = template labels.
    for d in &by_kind["Deployment"] {
        assert_eq!(d.pointer("/spec/replicas"), Some(&Value::from(3)));
        assert_eq!(
            d.pointer("/spec/selector/matchLabels"),
            d.pointer("/spec/template/metadata/labels")
        );
    }
    for j in &by_kind["Job"] {
        assert_eq!(str_at(j, "/spec/template/spec/restartPolicy"), "Never");
    }

    // Pods: service accounts, volumes and mounts refer to things that exist.
    let mut sidecars = 0;
    for w in &workloads {
        let name = str_at(w, "/metadata/name");
        let spec = w.pointer("/spec/template/spec").unwrap();
        let sa = str_at(spec, "/serviceAccountName");
        assert!(
            exists("ServiceAccount", sa),
            "{name}: ServiceAccount {sa} is not defined"
        );
        let mut volumes = BTreeSet::new();
        for v in spec["volumes"].as_array().unwrap() {
            volumes.insert(str_at(v, "/name"));
            if let Some(cm) = v.pointer("/configMap/name").and_then(Value::as_str) {
                assert!(
                    exists("ConfigMap", cm),
                    "{name}: ConfigMap {cm} is not defined"
                );
            }
            if let Some(secret) = v.pointer("/secret/secretName").and_then(Value::as_str) {
                assert!(
                    exists("Secret", secret),
                    "{name}: Secret {secret} is not created"
                );
            }
        }
        for c in containers(spec) {
            assert!(c.get("image").is_some(), "{name}: container without image");
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                let v = str_at(m, "/name");
                assert!(volumes.contains(v), "{name}: mount of unknown volume {v}");
            }
        }
        // Envoy runs as a native sidecar, and its config's files are mounted.
        for init in spec["initContainers"].as_array().into_iter().flatten() {
            assert_eq!(str_at(init, "/restartPolicy"), "Always", "{name}: sidecar");
            sidecars += 1;
            let config_volume = init["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| str_at(m, "/mountPath") == "/etc/envoy")
                .map(|m| str_at(m, "/name"))
                .unwrap();
            let cm_name = spec["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| str_at(v, "/name") == config_volume)
                .map(|v| str_at(v, "/configMap/name"))
                .unwrap();
            let cm = by_kind["ConfigMap"]
                .iter()
                .find(|c| str_at(c, "/metadata/name") == cm_name)
                .unwrap();
            let envoy: Value = serde_json::from_str(str_at(cm, "/data/envoy.json")).unwrap();
            let mounts: Vec<&str> = init["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| str_at(m, "/mountPath"))
                .collect();
            let mut files = Vec::new();
            collect_filenames(&envoy, &mut files);
            assert!(files.len() >= 3, "{name}: {files:?}");
            for file in files {
                assert!(
                    mounts.iter().any(|m| file.starts_with(&format!("{m}/"))),
                    "{name}: Envoy reads {file}, not under a mount {mounts:?}"
                );
            }
        }
    }
    assert_eq!(sidecars, 2, "one server and one client sidecar");

    // The generated Envoy configs carry the policy: SAN matches and jwt_authn.
    let server_cm = by_kind["ConfigMap"]
        .iter()
        .find(|c| str_at(c, "/metadata/name") == names::CONFIGMAP_SERVER_ENVOY)
        .unwrap();
    let text = str_at(server_cm, "/data/envoy.json");
    for needle in [
        bookstore::CLIENT_ID,
        "require_client_certificate",
        "jwt_authn",
        bookstore::ISSUER,
        "SANITIZE_SET",
    ] {
        assert!(
            text.contains(needle),
            "server sidecar config lacks {needle}"
        );
    }
    let client_cm = by_kind["ConfigMap"]
        .iter()
        .find(|c| str_at(c, "/metadata/name") == names::CONFIGMAP_CLIENT_ENVOY)
        .unwrap();
    let text = str_at(client_cm, "/data/envoy.json");
    for needle in [
        bookstore::SERVER_ID,
        "bookstore.default.svc.cluster.local",
        "envoy.clusters.dns",
        "ROUND_ROBIN",
    ] {
        assert!(
            text.contains(needle),
            "client sidecar config lacks {needle}"
        );
    }
}

fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers"]
        .into_iter()
        .flat_map(move |k| spec[k].as_array().into_iter().flatten())
}

fn collect_filenames<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("filename", Value::String(s)) => out.push(s),
                    _ => collect_filenames(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_filenames(i, out)),
        _ => {}
    }
}

/// The secrets script runs against the real `mtls` CLI (`$MTLS_CLI`, else the `mtls`
/// binary next to this test's target directory, as `cargo test --workspace` builds it) with
/// a stand-in kubectl that records what it is asked to create.
#[test]
fn create_secrets_script_with_the_mtls_cli() {
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("mtls")))
        .filter(|p| p.is_file())
        .map(std::ffi::OsString::from);
    let Some(cli) = std::env::var_os("MTLS_CLI").or(sibling) else {
        eprintln!(
            "no mtls CLI (MTLS_CLI unset, none built in this target dir): skipping the script run"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("kubectl.log");
    let kubectl = dir.path().join("kubectl");
    std::fs::write(
        &kubectl,
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\ncat >/dev/null\n",
            log.display()
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    support::success_stdout(&support::run_command(
        "create-secrets.sh",
        std::process::Command::new("bash")
            .arg(k8s_dir().join("create-secrets.sh"))
            .env("MTLS", cli)
            .env("KUBECTL", &kubectl),
    ));
    let log = std::fs::read_to_string(log).unwrap();
    for name in [
        names::SECRET_BOOKSTORE_TLS,
        names::SECRET_CLIENT_TLS,
        names::SECRET_CLIENT_TOKEN,
        names::CONFIGMAP_JWKS,
    ] {
        assert!(log.contains(name), "{log}");
    }
}

/// The sidecars' Envoy configs, as committed, load in real Envoy 1.40 (`--mode validate`),
/// with the mounted files stood in by a fresh PKI in a temporary directory.
#[test]
fn k8s_envoy_configs_validate_with_real_envoy() {
    let Some(envoy) = bookstore::envoy::find_envoy(None).filter(|p| p.exists()) else {
        assert!(
            std::env::var("MTLS_REQUIRE_ENVOY").as_deref() != Ok("1"),
            "MTLS_REQUIRE_ENVOY=1 but no Envoy: run ./scripts/install-test-tools.sh or set MTLS_ENVOY"
        );
        eprintln!("no Envoy: skipping validation");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pki =
        bookstore::MeshPki::create(dir.path().join("pki"), &bookstore::MeshPolicy::bookstore())
            .unwrap();
    let root = dir.path().join("etc-bookstore");
    for sub in ["tls", "jwks"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::copy(&pki.server().cert, root.join("tls/cert.pem")).unwrap();
    std::fs::copy(&pki.server().key, root.join("tls/key.pem")).unwrap();
    std::fs::copy(pki.bundle_path(), root.join("tls/bundle.pem")).unwrap();
    std::fs::copy(pki.jwks_path(), root.join("jwks/jwks.json")).unwrap();
    let mut validated = 0;
    for (_, doc) in documents() {
        let Some(config) = doc.pointer("/data/envoy.json").and_then(Value::as_str) else {
            continue;
        };
        let config = config.replace("/etc/bookstore/", &format!("{}/", root.display()));
        let path = dir
            .path()
            .join(format!("{}.json", str_at(&doc, "/metadata/name")));
        std::fs::write(&path, config).unwrap();
        let out = support::envoy_validate(&envoy, &path);
        assert!(
            out.status.success(),
            "{}: {}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        validated += 1;
    }
    assert_eq!(validated, 2);
}
