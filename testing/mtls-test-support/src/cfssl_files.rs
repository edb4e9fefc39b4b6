//! The files cfssl's tools write, as the tests that check for them list them.

/// The files `cfssl gencert … | cfssljson -bare NAME` writes for each of `names`:
/// `NAME.pem`, `NAME-key.pem` and `NAME.csr`.
///
/// ```
/// let files = mtls_test_support::cfssl_files::bare(&["ca"]);
/// assert_eq!(files, ["ca.pem", "ca-key.pem", "ca.csr"]);
/// ```
pub fn bare(names: &[&str]) -> Vec<String> {
    names
        .iter()
        .flat_map(|n| {
            [
                format!("{n}.pem"),
                format!("{n}-key.pem"),
                format!("{n}.csr"),
            ]
        })
        .collect()
}
