//! py-spiffe (the Python `spiffe` package, a Workload API client nobody here wrote) fetches
//! an X509-SVID, the bundle and a JWT-SVID from mtls-agent; the caller is selected by its
//! executable path (`/proc/<pid>/exe`), and another executable of the same uid is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

use support::*;

const PY: &str = r#"
import sys
from spiffe import WorkloadApiClient, TrustDomain
client = WorkloadApiClient(socket_path=sys.argv[1], default_timeout=5)
svid = client.fetch_x509_svid()
print("id", svid.spiffe_id)
print("serial", format(svid.leaf.serial_number, "x"))
print("chain", len(svid.cert_chain))
bundles = client.fetch_x509_bundles()
bundle = bundles.get_bundle_for_trust_domain(TrustDomain("bookstore.local"))
print("bundle", len(bundle.x509_authorities))
jwt = client.fetch_jwt_svid(audience={"bookstore"})
checked = client.validate_jwt_svid(jwt.token, "bookstore")
print("jwt", checked.spiffe_id)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_spiffe_fetches_an_x509_svid_selected_by_executable() {
    let python = python().expect(
        "no Python with py-spiffe: run ./scripts/install-test-tools.sh (makes .venv) or set MTLS_PYTHON",
    );
    // The kernel reports the resolved interpreter, not the venv symlink.
    let exe = std::fs::canonicalize(&python).unwrap();
    let t = TestAgent::start(&format!(
        "entries:\n  - spiffe_id: spiffe://bookstore.local/python\n    selectors: {{ uid: {}, exe: {} }}\n",
        my_uid(),
        exe.display()
    ))
    .await;
    let script = t.dir.path().join("fetch.py");
    std::fs::write(&script, PY).unwrap();
    let out = tokio::task::spawn_blocking({
        let (python, script, endpoint) = (python.clone(), script.clone(), t.endpoint());
        move || {
            Command::new(python)
                .arg(script)
                .arg(endpoint)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "py-spiffe failed: {stderr}\n{stdout}");
    let serial = t
        .agent
        .serial_of(&"spiffe://bookstore.local/python".parse().unwrap())
        .unwrap()
        .replace(':', "")
        .trim_start_matches('0')
        .to_owned();
    let want = format!(
        "id spiffe://bookstore.local/python\nserial {serial}\nchain 1\nbundle 1\njwt spiffe://bookstore.local/python\n"
    );
    assert_eq!(stdout, want, "stderr: {stderr}");

    // This test binary has the same uid but another executable: refused.
    let client = spiffe::WorkloadApiClient::connect_to(t.endpoint())
        .await
        .unwrap();
    assert!(client.fetch_x509_svid().await.is_err());
}
