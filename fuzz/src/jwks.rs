//! JWKS documents (RFC 7517), as fetched from a remote URL or read from a file.

use mtls_jwt::KeySet;
use serde_json::Value;

/// `data` is a JWKS document. A set that loads is never empty, names only `kid`s that the
/// document has, keeps the document as parsed, and loads again from its own document
/// with the same keys.
pub fn jwks(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(set) = KeySet::from_json(text) else {
        return;
    };
    assert!(!set.is_empty());
    let document: Value = serde_json::from_str(text).expect("the set loaded from valid JSON");
    assert_eq!(set.document(), &document);
    let keys = document["keys"].as_array().expect("[keys] is an array");
    assert!(set.len() <= keys.len());
    for kid in set.key_ids() {
        assert!(
            keys.iter()
                .any(|k| k.get("kid").and_then(Value::as_str) == Some(kid.as_str())),
            "kid {kid:?} is not in the document"
        );
    }
    let again = KeySet::from_value(document).expect("loads again");
    assert_eq!(again.key_ids(), set.key_ids());
    assert_eq!(again.len(), set.len());
}
