//! The JOSE header rules: the header's shape, `alg` against the allow-list, no `crit`, and
//! the `typ` rule. The `kid` is handed on to the key lookup.

use serde::Deserialize;
use serde_json::Value;

use crate::alg::Algorithm;
use crate::error::{Error, Result};

/// Which header `typ` values are accepted (case-insensitively).
#[derive(Clone, Debug, Default)]
pub(super) enum TypRule {
    #[default]
    Any,
    OneOf {
        values: Vec<String>,
        allow_absent: bool,
    },
}

/// What a validator accepts in the JOSE header.
pub(super) struct JoseRules {
    pub(super) algorithms: Vec<Algorithm>,
    allowed_names: Vec<String>,
    typ: TypRule,
}

/// A header that passed [`JoseRules::check`].
pub(super) struct Accepted {
    pub(super) alg: Algorithm,
    pub(super) kid: Option<String>,
}

impl JoseRules {
    pub(super) fn new(algorithms: Vec<Algorithm>, typ: TypRule) -> Self {
        let allowed_names = algorithms.iter().map(|a| a.as_str().to_owned()).collect();
        Self {
            algorithms,
            allowed_names,
            typ,
        }
    }

    /// Checks the decoded header: a JSON object, a known and allowed `alg`, no `crit`, an
    /// accepted `typ` (in that order).
    pub(super) fn check(&self, header_json: &[u8]) -> Result<Accepted> {
        let header = Header::parse(header_json)?;
        let alg: Algorithm = header.alg.parse()?;
        if !self.algorithms.contains(&alg) {
            return Err(Error::AlgorithmNotAllowed {
                presented: header.alg,
                allowed: self.allowed_names.clone(),
            });
        }
        if let Some(names) = header.crit {
            return Err(Error::UnsupportedCritical { names });
        }
        self.check_typ(header.typ.as_deref())?;
        Ok(Accepted {
            alg,
            kid: header.kid,
        })
    }

    fn check_typ(&self, typ: Option<&str>) -> Result<()> {
        match &self.typ {
            TypRule::Any => Ok(()),
            TypRule::OneOf {
                values,
                allow_absent,
            } => {
                let ok = match typ {
                    None => *allow_absent,
                    Some(t) => values.iter().any(|v| v.eq_ignore_ascii_case(t)),
                };
                if ok {
                    Ok(())
                } else {
                    Err(Error::TypNotAllowed {
                        presented: typ.map(str::to_owned),
                        expected: format!(
                            "{}{values:?}",
                            if *allow_absent {
                                "absent or one of "
                            } else {
                                "one of "
                            }
                        ),
                    })
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    crit: Option<Vec<String>>,
}

impl Header {
    /// The JOSE header: a JSON object (RFC 7515 §5.2) of valid UTF-8. Parsing into a
    /// `Value` first validates every member (serde skips ignored members unchecked, and
    /// would fill the struct by position from an array).
    fn parse(json: &[u8]) -> Result<Self> {
        let malformed = |reason: String| Error::MalformedHeader { reason };
        let value: Value = serde_json::from_slice(json).map_err(|e| malformed(e.to_string()))?;
        if !value.is_object() {
            return Err(malformed(format!(
                "the JOSE header must be a JSON object, presented {}",
                json_kind(&value)
            )));
        }
        serde_json::from_value(value).map_err(|e| malformed(e.to_string()))
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
