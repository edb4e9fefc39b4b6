//! The client's scenario — list, create a shelf, create/get/list/delete a book, delete the
//! shelf — over any gRPC channel, recording which replica answered each call.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    time::Duration,
};

use tonic::{Code, Request, Status, body::Body, metadata::MetadataMap};
use tower::util::BoxCloneService;

use crate::{
    CALLER_HEADER, REPLICA_HEADER, TLS_HEADER,
    proto::{
        Book, CreateBookRequest, CreateShelfRequest, DeleteBookRequest, DeleteShelfRequest,
        GetBookRequest, GetShelfRequest, ListBooksRequest, Shelf,
        bookstore_client::BookstoreClient,
    },
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Any gRPC transport, boxed: a [`mtls_tonic::balance::BalancedChannel`], a `tonic` `Channel` to an
/// Envoy sidecar, ... (see [`boxed`]).
pub type BoxChannel = BoxCloneService<http::Request<Body>, http::Response<Body>, BoxError>;

/// Boxes a gRPC transport into a [`BoxChannel`].
pub fn boxed<S>(service: S) -> BoxChannel
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    BoxCloneService::new(tower::ServiceExt::map_err(service, Into::into))
}

/// Calls per round of the scenario.
pub const CALLS_PER_ROUND: usize = 9;

/// One call of the scenario.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CallRecord {
    /// Round number, from 1.
    pub round: usize,
    /// The method and its arguments, e.g. `GetBook(3, 1)`.
    pub step: String,
    /// The replica that answered (response header [`REPLICA_HEADER`]), if any.
    pub replica: Option<String>,
    /// What happened: `Ok(summary)` or the unexpected status.
    pub outcome: Result<String, (Code, String)>,
}

/// What a scenario run saw.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Report {
    /// Every call, in order.
    pub calls: Vec<CallRecord>,
    /// Calls answered, per replica.
    pub per_replica: BTreeMap<String, usize>,
    /// Calls about a shelf or book created on another replica, answered by a replica
    /// that does not have it: replicas with their own in-memory store (separate
    /// `bookstore-server` processes) do not share data. Such a round ends early; this is
    /// not a failure.
    pub cross_replica_misses: usize,
    /// The caller identities the replicas reported ([`CALLER_HEADER`]).
    pub callers: BTreeSet<String>,
    /// What the replicas' handshakes with the caller negotiated ([`TLS_HEADER`]; empty
    /// behind Envoy, where the replicas speak plaintext).
    pub tls: BTreeSet<String>,
}

impl Report {
    /// Calls made.
    pub fn total(&self) -> usize {
        self.calls.len()
    }

    /// Calls that went as expected.
    pub fn succeeded(&self) -> usize {
        self.calls.iter().filter(|c| c.outcome.is_ok()).count()
    }

    /// Calls that did not.
    pub fn failures(&self) -> impl Iterator<Item = &CallRecord> {
        self.calls.iter().filter(|c| c.outcome.is_err())
    }

    /// The fraction of answered calls served by `replica` (0 when none was answered).
    pub fn share(&self, replica: &str) -> f64 {
        let answered: usize = self.per_replica.values().sum();
        if answered == 0 {
            return 0.0;
        }
        self.per_replica.get(replica).copied().unwrap_or(0) as f64 / answered as f64
    }

    /// Appends `later` (e.g. the second half of a run, after a rotation).
    pub fn extend(&mut self, later: Report) {
        self.calls.extend(later.calls);
        for (replica, n) in later.per_replica {
            *self.per_replica.entry(replica).or_default() += n;
        }
        self.cross_replica_misses += later.cross_replica_misses;
        self.callers.extend(later.callers);
    }

    /// One line per replica: `127.0.0.2  31 calls  34%`.
    pub fn distribution(&self) -> String {
        let answered: usize = self.per_replica.values().sum();
        self.per_replica
            .iter()
            .map(|(name, n)| {
                format!(
                    "  {name:<24} {n:>4} calls {:>4.0}%",
                    100.0 * *n as f64 / answered.max(1) as f64
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl fmt::Display for CallRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let replica = self.replica.as_deref().unwrap_or("-");
        match &self.outcome {
            Ok(summary) => write!(
                f,
                "#{:<3} {:<28} -> {replica:<16} {summary}",
                self.round, self.step
            ),
            Err((code, message)) => write!(
                f,
                "#{:<3} {:<28} -> {replica:<16} FAILED {code:?}: {message}",
                self.round, self.step
            ),
        }
    }
}

/// Runs the scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    client: BookstoreClient<BoxChannel>,
    token: Option<String>,
    timeout: Duration,
    tag: String,
    rounds_done: usize,
}

impl Scenario {
    /// A scenario over `channel`, sending `authorization: Bearer <token>` when given.
    pub fn new(channel: BoxChannel, token: Option<String>) -> Self {
        Self {
            client: BookstoreClient::new(channel),
            token,
            timeout: Duration::from_secs(10),
            tag: run_tag(),
            rounds_done: 0,
        }
    }

    /// Per-call deadline (`grpc-timeout`, default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        if let Some(token) = &self.token
            && let Ok(value) = format!("Bearer {token}").parse()
        {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    /// One `ListShelves` call: the replica that answered, or the status. Used to probe
    /// refusals (no token, wrong audience, ...).
    pub async fn probe(&mut self) -> Result<Option<String>, Status> {
        let request = self.request(());
        self.client
            .list_shelves(request)
            .await
            .map(|r| replica_of(r.metadata()))
    }

    /// Runs rounds of [`CALLS_PER_ROUND`] calls until at least `calls` were made.
    pub async fn run(&mut self, calls: usize) -> Report {
        let mut report = Report::default();
        let rounds = calls.div_ceil(CALLS_PER_ROUND).max(1);
        // Rounds number on across runs of one scenario (e.g. two halves around a rotation).
        let first = self.rounds_done + 1;
        self.rounds_done += rounds;
        for round in first..first + rounds {
            self.round(round, &mut report).await;
        }
        report
    }

    async fn round(&mut self, round: usize, report: &mut Report) {
        let mut rec = Recorder { round, report };
        let tag = &self.tag;

        // 1. ListShelves: the seeded shelf 1 is there.
        let r = self.client.list_shelves(self.request(())).await;
        let seeded = rec.step("ListShelves", r, None, |list| {
            let fiction = list
                .shelves
                .iter()
                .any(|s| s.id == 1 && s.theme == "Fiction");
            if fiction {
                Ok((format!("{} shelves", list.shelves.len()), ()))
            } else {
                Err("the seeded shelf 1 \"Fiction\" is missing".to_owned())
            }
        });
        if seeded.is_none() {
            return;
        }

        // 2. CreateShelf (the theme names this run, so another store's shelf cannot pass).
        let theme = format!("Scenario {tag} round {round}");
        let request = self.request(CreateShelfRequest {
            shelf: Some(Shelf {
                id: 0,
                theme: theme.clone(),
            }),
        });
        let r = self.client.create_shelf(request).await;
        let Some((shelf, home)) = rec.step("CreateShelf", r, None, |s| {
            Ok((format!("shelf {} {:?}", s.id, s.theme), s.id))
        }) else {
            return;
        };

        // 3. GetShelf.
        let r = self
            .client
            .get_shelf(self.request(GetShelfRequest { shelf }))
            .await;
        let step = format!("GetShelf({shelf})");
        let found = rec.step(&step, r, Some(&home), |s| {
            if s.theme == theme {
                Ok((format!("{:?}", s.theme), ()))
            } else {
                Err(format!("theme {:?}, expected {theme:?}", s.theme))
            }
        });
        if found.is_none() {
            return;
        }

        // 4. CreateBook.
        let title = format!("The Mesh, part {round}");
        let request = self.request(CreateBookRequest {
            shelf,
            book: Some(Book {
                id: 0,
                author: "mtls".to_owned(),
                title: title.clone(),
            }),
        });
        let r = self.client.create_book(request).await;
        let step = format!("CreateBook({shelf})");
        let Some((book, book_home)) = rec.step(&step, r, Some(&home), |b| {
            Ok((format!("book {} {:?}", b.id, b.title), b.id))
        }) else {
            return;
        };

        // 5. GetBook.
        let r = self
            .client
            .get_book(self.request(GetBookRequest { shelf, book }))
            .await;
        let step = format!("GetBook({shelf}, {book})");
        let found = rec.step(&step, r, Some(&book_home), |b| {
            if b.title == title {
                Ok((format!("{:?} by {}", b.title, b.author), ()))
            } else {
                Err(format!("title {:?}, expected {title:?}", b.title))
            }
        });
        if found.is_none() {
            return;
        }

        // 6. ListBooks.
        let r = self
            .client
            .list_books(self.request(ListBooksRequest { shelf }))
            .await;
        let step = format!("ListBooks({shelf})");
        let listed = rec.step(&step, r, Some(&book_home), |l| {
            if l.books.iter().any(|b| b.id == book && b.title == title) {
                Ok((format!("{} books", l.books.len()), ()))
            } else {
                Err(format!("book {book} is not listed"))
            }
        });
        if listed.is_none() {
            return;
        }

        // 7. DeleteBook.
        let r = self
            .client
            .delete_book(self.request(DeleteBookRequest { shelf, book }))
            .await;
        let step = format!("DeleteBook({shelf}, {book})");
        if rec
            .step(&step, r, Some(&book_home), |()| {
                Ok(("deleted".to_owned(), ()))
            })
            .is_none()
        {
            return;
        }

        // 8. DeleteShelf.
        let r = self
            .client
            .delete_shelf(self.request(DeleteShelfRequest { shelf }))
            .await;
        let step = format!("DeleteShelf({shelf})");
        if rec
            .step(&step, r, Some(&home), |()| Ok(("deleted".to_owned(), ())))
            .is_none()
        {
            return;
        }

        // 9. GetShelf of the deleted shelf: NOT_FOUND is the expected answer.
        let r = self
            .client
            .get_shelf(self.request(GetShelfRequest { shelf }))
            .await;
        let step = format!("GetShelf({shelf}) deleted");
        let replica = replica_of_result(&r);
        rec.caller(&r);
        let outcome = match r {
            Err(status) if status.code() == Code::NotFound => {
                Ok(format!("NOT_FOUND as expected: {}", status.message()))
            }
            Err(status) => Err((status.code(), status.message().to_owned())),
            Ok(_) if replica.is_some() && replica != home => {
                rec.cross(&step, replica, &home);
                return;
            }
            Ok(_) => Err((Code::Ok, "the deleted shelf is still there".to_owned())),
        };
        rec.push(step, replica, outcome);
    }
}

struct Recorder<'a> {
    round: usize,
    report: &'a mut Report,
}

impl Recorder<'_> {
    fn caller<T>(&mut self, result: &Result<tonic::Response<T>, Status>) {
        let metadata = match result {
            Ok(r) => r.metadata(),
            Err(s) => s.metadata(),
        };
        if let Some(caller) = metadata.get(CALLER_HEADER).and_then(|v| v.to_str().ok()) {
            self.report.callers.insert(caller.to_owned());
        }
        if let Some(tls) = metadata.get(TLS_HEADER).and_then(|v| v.to_str().ok()) {
            self.report.tls.insert(tls.to_owned());
        }
    }

    fn push(
        &mut self,
        step: String,
        replica: Option<String>,
        outcome: Result<String, (Code, String)>,
    ) {
        if let Some(r) = &replica {
            *self.report.per_replica.entry(r.clone()).or_default() += 1;
        }
        self.report.calls.push(CallRecord {
            round: self.round,
            step,
            replica,
            outcome,
        });
    }

    /// Records one call. `home` is the replica that created the resource the call is
    /// about: a NOT_FOUND or a different resource from another replica means the replicas
    /// do not share a store (counted; the round ends). Returns the value and the replica
    /// that answered, or `None` when the round must end.
    fn step<T, V>(
        &mut self,
        step: &str,
        result: Result<tonic::Response<T>, Status>,
        home: Option<&Option<String>>,
        verify: impl FnOnce(T) -> Result<(String, V), String>,
    ) -> Option<(V, Option<String>)> {
        let replica = replica_of_result(&result);
        self.caller(&result);
        let foreign = home.filter(|home| replica.is_some() && replica != **home);
        match result {
            Ok(response) => match verify(response.into_inner()) {
                Ok((summary, value)) => {
                    self.push(step.to_owned(), replica.clone(), Ok(summary));
                    Some((value, replica))
                }
                Err(_) if foreign.is_some() => {
                    self.cross(step, replica, foreign.unwrap_or(&None));
                    None
                }
                Err(problem) => {
                    self.push(step.to_owned(), replica, Err((Code::Ok, problem)));
                    None
                }
            },
            Err(status) if status.code() == Code::NotFound && foreign.is_some() => {
                self.cross(step, replica, foreign.unwrap_or(&None));
                None
            }
            Err(status) => {
                let outcome = Err((status.code(), status.message().to_owned()));
                self.push(step.to_owned(), replica, outcome);
                None
            }
        }
    }

    /// A call about a resource created on another replica, answered by a replica that does
    /// not have it: separate stores. Recorded (not a failure) and counted.
    fn cross(&mut self, step: &str, replica: Option<String>, home: &Option<String>) {
        self.report.cross_replica_misses += 1;
        let outcome = Ok(format!(
            "not here: created on {}, this replica has its own store (round ends)",
            home.as_deref().unwrap_or("?")
        ));
        self.push(step.to_owned(), replica, outcome);
    }
}

/// Four hex digits that differ between runs (names the shelves a run creates).
fn run_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{:04x}", (nanos ^ std::process::id()) & 0xffff)
}

fn replica_of(metadata: &MetadataMap) -> Option<String> {
    metadata
        .get(REPLICA_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn replica_of_result<T>(result: &Result<tonic::Response<T>, Status>) -> Option<String> {
    match result {
        Ok(r) => replica_of(r.metadata()),
        Err(s) => replica_of(s.metadata()),
    }
}
