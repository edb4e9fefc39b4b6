//! Every public error enum of every crate and binary of the workspace renders for people:
//! no Rust `Debug` output (`Some(..)`, byte arrays, `UnixTime(..)`, struct dumps) in a
//! message. The enums are found by reading the sources (a new enum is covered without
//! touching this test): every `pub enum …Error` with `thiserror` messages. For each
//! variant, each `{field:?}` placeholder of its `#[error(..)]` message must name a field
//! whose `Debug` is a quoted, escaped text (or a list of them, or a duration) — never an
//! `Option`, bytes or a struct; and no source fills an error field with a `Debug`
//! rendering (`format!("{e:?}")`). Real error paths are also rendered and checked in
//! mtls-cli's `tests/people.rs` and each crate's negative tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// Field types whose `Debug` reads as text: a string is quoted with its control characters
/// escaped (deliberately: a presented value cannot forge a log line), a list of strings is
/// `["a", "b"]`, a duration is `1.5s`.
const DEBUG_READS_AS_TEXT: &[&str] = &[
    "String",
    "&'static str",
    "PathBuf",
    "Vec<String>",
    "Duration",
    "std::time::Duration",
    "Box<str>",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The `src` directory of every workspace member (and the fuzz crate).
fn source_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for member in [
        "mtls-certs",
        "mtls-core",
        "mtls-jwt",
        "mtls-tonic",
        "mtls-agent",
        "mtls-cli",
        "examples/bookstore",
        "benches",
    ] {
        rust_sources(&root().join(member).join("src"), &mut files);
    }
    assert!(files.len() > 50, "found only {} source files", files.len());
    files
}

#[derive(Debug)]
struct Variant {
    name: String,
    message: String,
    /// (field, type)
    fields: Vec<(String, String)>,
}

/// The body of the enum declared at `start` (`pub enum NameError { … }`, brace-matched).
fn enum_body(text: &str, start: usize) -> &str {
    let open = start + text[start..].find('{').unwrap();
    let mut depth = 0;
    for (i, c) in text[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return &text[open + 1..open + i];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced enum");
}

/// Variants with their `#[error(..)]` message and named fields (comments dropped).
fn variants(body: &str) -> Vec<Variant> {
    let clean: String = body
        .lines()
        .map(|l| match l.trim_start().starts_with("//") {
            true => "",
            false => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    let mut rest = clean.as_str();
    while let Some(at) = rest.find("#[error(") {
        rest = &rest[at + "#[error(".len()..];
        // The attribute ends at the `)]` that closes it (messages hold no `)]`).
        let end = rest
            .find(")]\n")
            .unwrap_or_else(|| rest.find(")]").unwrap());
        // The format string: the attribute's first string literal (later arguments are
        // expressions, e.g. an inner `format!` of a `&str`, which reads as text).
        let message = first_literal(&rest[..end]);
        rest = &rest[end + 2..];
        // Skip further attributes, then the variant name.
        let mut after = rest.trim_start();
        while after.starts_with("#[") {
            after = after[after.find("]\n").map_or(after.len(), |i| i + 2)..].trim_start();
        }
        let name: String = after
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let after_name = &after[name.len()..];
        let mut fields = Vec::new();
        if after_name.trim_start().starts_with('{') {
            let open = after_name.find('{').unwrap();
            let close = open + after_name[open..].find('}').unwrap();
            for field in after_name[open + 1..close].split(',') {
                let field = field.trim();
                if let Some((f, t)) = field.split_once(':') {
                    let f = f.trim().trim_start_matches("pub ").to_owned();
                    fields.push((f, t.trim().to_owned()));
                }
            }
        }
        out.push(Variant {
            name,
            message,
            fields,
        });
    }
    out
}

/// The first `"…"` literal of `attribute` (escapes kept as written).
fn first_literal(attribute: &str) -> String {
    let Some(open) = attribute.find('"') else {
        return String::new();
    };
    let mut out = String::new();
    let mut escaped = false;
    for c in attribute[open + 1..].chars() {
        match (escaped, c) {
            (false, '\\') => escaped = true,
            (false, '"') => break,
            _ => {
                escaped = false;
                out.push(c);
            }
        }
    }
    out
}

/// The `{name:?}` / `{name:#?}` placeholders of a message.
fn debug_placeholders(message: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = message;
    while let Some(open) = rest.find('{') {
        rest = &rest[open + 1..];
        if rest.starts_with('{') {
            rest = &rest[1..];
            continue;
        }
        let Some(close) = rest.find('}') else { break };
        let spec = &rest[..close];
        if let Some((name, format)) = spec.split_once(':')
            && format.contains('?')
        {
            out.push(name.to_owned());
        }
        rest = &rest[close..];
    }
    out
}

#[test]
fn every_error_enum_renders_without_debug_artefacts() {
    let mut enums = Vec::new();
    let mut problems = Vec::new();
    for file in source_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let shown = file
            .strip_prefix(root())
            .unwrap_or(&file)
            .display()
            .to_string();
        let mut search = 0;
        while let Some(at) = text[search..].find("pub enum ") {
            let start = search + at;
            search = start + 9;
            let name: String = text[search..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.ends_with("Error") {
                continue;
            }
            let body = enum_body(&text, start);
            let variants = variants(body);
            if variants.is_empty() {
                continue; // not a thiserror enum
            }
            for v in &variants {
                // Positional `{0:?}` / `{:?}` have no named field to check: refuse them.
                for placeholder in debug_placeholders(&v.message) {
                    let ty = v
                        .fields
                        .iter()
                        .find(|(f, _)| *f == placeholder)
                        .map(|(_, t)| t.as_str());
                    match ty {
                        Some(ty) if DEBUG_READS_AS_TEXT.contains(&ty) => {}
                        Some(ty) => problems.push(format!(
                            "{shown}: {name}::{}: {{{placeholder}:?}} renders a {ty} with Debug",
                            v.name
                        )),
                        None => problems.push(format!(
                            "{shown}: {name}::{}: {{{placeholder}:?}} is not a named field of the variant",
                            v.name
                        )),
                    }
                }
            }
            enums.push(format!("{shown}: {name} ({} variants)", variants.len()));
        }
        // No error field filled with a Debug rendering of another error.
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            let debug_of_error = ["{e:?}", "{err:?}", "{error:?}", "{:?}\", e)"]
                .iter()
                .any(|p| code.contains(p));
            // The one sanctioned use: a helper that turns a Debug-only error into words.
            if debug_of_error && !code.ends_with("// Debug turned into words") {
                problems.push(format!(
                    "{shown}:{}: a message made from Debug: {code}",
                    n + 1
                ));
            }
        }
    }
    // Every crate's enum was found (the parser did not silently miss them).
    for expected in [
        "mtls-certs/src/error.rs: Error",
        "mtls-core/src/error.rs: Error",
        "mtls-jwt/src/error.rs: Error",
        "mtls-tonic/src/error.rs: Error",
        "mtls-tonic/src/jwt/error.rs: JwtError",
        "mtls-tonic/src/authz/error.rs: AuthzError",
        "mtls-agent/src/error.rs: Error",
        "examples/bookstore/src/error.rs: Error",
        "benches/src/error.rs: Error",
    ] {
        assert!(
            enums.iter().any(|e| e.starts_with(expected)),
            "{expected} not found among {enums:#?}"
        );
    }
    assert!(
        problems.is_empty(),
        "{problems:#?}\nenums checked: {enums:#?}"
    );
    println!("{enums:#?}");
}

#[test]
fn the_checker_catches_what_it_must() {
    let body = r#"
        /// An optional thing.
        #[error("bad {value:?} and {name:?}")]
        Bad {
            /// doc
            value: Option<String>,
            /// doc
            name: String,
        },
        #[error("fine {path:?}: {{literal}}")]
        Fine { path: PathBuf },
        #[error("inner {}", value.as_deref().map_or("-".into(), |v| format!("{v:?}")))]
        Inner { value: Option<String> },
    "#;
    let vs = variants(body);
    assert_eq!(vs.len(), 3);
    assert!(
        debug_placeholders(&vs[2].message).is_empty(),
        "{:?}",
        vs[2].message
    );
    assert_eq!(vs[0].name, "Bad");
    assert_eq!(
        vs[0].fields,
        [
            ("value".to_owned(), "Option<String>".to_owned()),
            ("name".to_owned(), "String".to_owned())
        ]
    );
    assert_eq!(debug_placeholders(&vs[0].message), ["value", "name"]);
    assert_eq!(debug_placeholders(&vs[1].message), ["path"]);
    assert!(!DEBUG_READS_AS_TEXT.contains(&"Option<String>"));
}
