//! Reading criterion's results (`<target>/criterion/**/new/{benchmark,estimates}.json`).

use std::path::Path;

use serde_json::Value;

/// One criterion benchmark's latest estimate.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    /// Group (`leaf_issuance_p256`, `ES256`, ...).
    pub group: String,
    /// Function within the group (`mtls_certs`, `raw_rcgen`, ...).
    pub function: String,
    /// Mean time per iteration, ns.
    pub mean_ns: f64,
    /// 95 % confidence interval of the mean, ns.
    pub mean_ci_ns: (f64, f64),
    /// Median time per iteration, ns.
    pub median_ns: f64,
    /// Elements per iteration when the bench declared a throughput.
    pub elements: Option<u64>,
}

impl Estimate {
    /// `group/function`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.group, self.function)
    }
}

/// Every estimate under `dir` (criterion's output directory), sorted by id. A directory
/// that does not exist gives an empty list.
pub fn read_estimates(dir: &Path) -> Vec<Estimate> {
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort_by_key(Estimate::id);
    out
}

fn walk(dir: &Path, out: &mut Vec<Estimate>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            if let Some(e) = parse(&path) {
                out.push(e);
            }
        } else if path
            .file_name()
            .is_none_or(|n| n != "report" && n != "base")
        {
            walk(&path, out);
        }
    }
}

fn parse(new_dir: &Path) -> Option<Estimate> {
    let read = |name: &str| -> Option<Value> {
        serde_json::from_str(&std::fs::read_to_string(new_dir.join(name)).ok()?).ok()
    };
    let bench = read("benchmark.json")?;
    let est = read("estimates.json")?;
    let group = bench.get("group_id")?.as_str()?.to_owned();
    let function = match (bench.get("function_id"), bench.get("value_str")) {
        (Some(Value::String(f)), Some(Value::String(v))) => format!("{f}/{v}"),
        (Some(Value::String(f)), _) => f.clone(),
        (_, Some(Value::String(v))) => v.clone(),
        _ => String::new(),
    };
    let point = |k: &str| est.get(k)?.get("point_estimate")?.as_f64();
    let ci = |bound: &str| {
        est.get("mean")?
            .get("confidence_interval")?
            .get(bound)?
            .as_f64()
    };
    let elements = bench
        .get("throughput")
        .and_then(|t| t.get("Elements"))
        .and_then(Value::as_u64);
    Some(Estimate {
        group,
        function,
        mean_ns: point("mean")?,
        mean_ci_ns: (ci("lower_bound")?, ci("upper_bound")?),
        median_ns: point("median")?,
        elements,
    })
}

/// The estimate `group/function`, if present.
pub fn find<'a>(estimates: &'a [Estimate], group: &str, function: &str) -> Option<&'a Estimate> {
    estimates
        .iter()
        .find(|e| e.group == group && e.function == function)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, sub: &str, bench: &str, est: &str) {
        let d = dir.join(sub).join("new");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("benchmark.json"), bench).unwrap();
        std::fs::write(d.join("estimates.json"), est).unwrap();
    }

    const EST: &str = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":90.0,"upper_bound":110.0},"point_estimate":100.0,"standard_error":1.0},"median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":2.0},"point_estimate":99.0,"standard_error":1.0},"median_abs_dev":null,"slope":null,"std_dev":null}"#;

    #[test]
    fn reads_nested_results_and_skips_broken_ones() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "ES256/mtls_jwt uncached",
            r#"{"group_id":"ES256","function_id":"mtls_jwt uncached","value_str":null,"throughput":null}"#,
            EST,
        );
        write(
            dir.path(),
            "unary_calls/balanced",
            r#"{"group_id":"unary_calls","function_id":"balanced","value_str":null,"throughput":{"Elements":512}}"#,
            EST,
        );
        write(dir.path(), "broken/x", "{", EST);
        write(
            dir.path(),
            "noest/x",
            r#"{"group_id":"noest","function_id":"x"}"#,
            "{}",
        );
        let all = read_estimates(dir.path());
        assert_eq!(all.len(), 2, "{all:?}");
        let e = find(&all, "ES256", "mtls_jwt uncached").unwrap();
        assert_eq!(e.mean_ns, 100.0);
        assert_eq!(e.median_ns, 99.0);
        assert_eq!(e.mean_ci_ns, (90.0, 110.0));
        assert_eq!(
            find(&all, "unary_calls", "balanced").unwrap().elements,
            Some(512)
        );
        assert!(read_estimates(&dir.path().join("missing")).is_empty());
    }
}
