//! Reading metrics back in tests: `metrics-util`'s `DebuggingRecorder`, installed for one
//! scope on the test's thread (`metrics::with_local_recorder`), with the test's async work on
//! a current-thread runtime so every task records into it. Shared by the crates' tests
//! (`#[path]`), so each reads values the same way.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::future::Future;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// A recorder for one test.
pub struct Recorded {
    recorder: DebuggingRecorder,
    snapshotter: Snapshotter,
}

/// Values recorded since the previous [`Recorded::take`], by metric name and label set.
#[derive(Debug, Default)]
pub struct Values(HashMap<(String, Vec<(String, String)>), DebugValue>);

impl Recorded {
    pub fn new() -> Self {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        Self {
            recorder,
            snapshotter,
        }
    }

    /// Runs `f` with this recorder as the thread's recorder.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    /// Runs `future` to completion on a current-thread runtime with this recorder.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        self.run(|| runtime.block_on(future))
    }

    /// Takes values until `done` holds for their sum, or `limit` passes (events recorded by
    /// tasks still running when the caller's own step returned); returns the sum.
    pub async fn take_until(
        &self,
        limit: std::time::Duration,
        done: impl Fn(&Values) -> bool,
    ) -> Values {
        let deadline = std::time::Instant::now() + limit;
        let mut sum = Values::default();
        loop {
            sum.merge(self.take());
            if done(&sum) || std::time::Instant::now() > deadline {
                return sum;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// What was recorded since the last call (the recorder resets counters as it reads).
    pub fn take(&self) -> Values {
        let mut values = HashMap::new();
        for (key, _unit, _description, value) in self.snapshotter.snapshot().into_vec() {
            let key = key.key();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            values.insert((key.name().to_owned(), labels), value);
        }
        Values(values)
    }
}

impl Values {
    /// Adds `later` (what a later [`Recorded::take`] returned): counters add up, gauges
    /// take the later value, histogram samples accumulate.
    pub fn merge(&mut self, later: Values) {
        for (key, value) in later.0 {
            match (self.0.get_mut(&key), value) {
                (Some(DebugValue::Counter(n)), DebugValue::Counter(m)) => *n += m,
                (Some(DebugValue::Histogram(xs)), DebugValue::Histogram(ys)) => xs.extend(ys),
                (_, value) => {
                    self.0.insert(key, value);
                }
            }
        }
    }

    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<&DebugValue> {
        let mut wanted: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        wanted.sort();
        self.0.get(&(name.to_owned(), wanted))
    }

    /// The counter with exactly these labels (0 if it was never incremented).
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.find(name, labels) {
            Some(DebugValue::Counter(n)) => *n,
            None => 0,
            Some(other) => panic!("{name} is not a counter: {other:?}"),
        }
    }

    /// The sum of a counter over every label set.
    pub fn counter_total(&self, name: &str) -> u64 {
        self.0
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, v)| match v {
                DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum()
    }

    /// The gauge with exactly these labels, if it was set.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match self.find(name, labels) {
            Some(DebugValue::Gauge(v)) => Some(v.into_inner()),
            None => None,
            Some(other) => panic!("{name} is not a gauge: {other:?}"),
        }
    }

    /// The samples of a histogram with exactly these labels.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        match self.find(name, labels) {
            Some(DebugValue::Histogram(v)) => v.iter().map(|x| x.into_inner()).collect(),
            None => Vec::new(),
            Some(other) => panic!("{name} is not a histogram: {other:?}"),
        }
    }

    /// Every label set recorded for `name`.
    pub fn label_sets(&self, name: &str) -> Vec<Vec<(String, String)>> {
        let mut sets: Vec<_> = self
            .0
            .keys()
            .filter(|(n, _)| n == name)
            .map(|(_, l)| l.clone())
            .collect();
        sets.sort();
        sets
    }
}
