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
    CALLER_HEADER, REPLICA_HEADER,
    proto::{
        Book, CreateBookRequest, CreateShelfRequest, DeleteBookRequest, DeleteShelfRequest,
        GetBookRequest, GetShelfRequest, ListBooksRequest, Shelf,
        bookstore_client::BookstoreClient,
    },
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Any gRPC transport, boxed: a [`mtls_tonic::BalancedChannel`], a `tonic` `Channel` to an
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
    /// Reads of a shelf created on another replica that answered NOT_FOUND: replicas with
    /// their own in-memory store (separate `bookstore-server` processes) do not share data.
    /// Such a round stops early; this is not a failure.
    pub cross_replica_misses: usize,
    /// The caller identities the replicas reported ([`CALLER_HEADER`]).
    pub callers: BTreeSet<String>,
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
}

impl Scenario {
    /// A scenario over `channel`, sending `authorization: Bearer <token>` when given.
    pub fn new(channel: BoxChannel, token: Option<String>) -> Self {
        Self {
            client: BookstoreClient::new(channel),
            token,
            timeout: Duration::from_secs(10),
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
        for round in 1..=rounds {
            self.round(round, &mut report).await;
        }
        report
    }

    async fn round(&mut self, round: usize, report: &mut Report) {
        let mut rec = Recorder { round, report };

        // 1. ListShelves: the seeded shelf 1 is there.
        let r = self.client.list_shelves(self.request(())).await;
        rec.check("ListShelves", r, |list| {
            let fiction = list
                .shelves
                .iter()
                .any(|s| s.id == 1 && s.theme == "Fiction");
            if fiction {
                Ok(format!("{} shelves", list.shelves.len()))
            } else {
                Err("the seeded shelf 1 \"Fiction\" is missing".to_owned())
            }
        });

        // 2. CreateShelf.
        let theme = format!("Scenario round {round}");
        let r = self
            .client
            .create_shelf(self.request(CreateShelfRequest {
                shelf: Some(Shelf {
                    id: 0,
                    theme: theme.clone(),
                }),
            }))
            .await;
        let Some((shelf, home)) = rec.check_value("CreateShelf", r, |s| {
            Ok((format!("shelf {} {:?}", s.id, s.theme), s.id))
        }) else {
            return;
        };

        // 3. GetShelf.
        let step = format!("GetShelf({shelf})");
        let r = self
            .client
            .get_shelf(self.request(GetShelfRequest { shelf }))
            .await;
        if rec.cross_replica(&step, &r, &home) {
            return;
        }
        rec.check(&step, r, |s| {
            if s.theme == theme {
                Ok(format!("{:?}", s.theme))
            } else {
                Err(format!("theme {:?}, expected {theme:?}", s.theme))
            }
        });

        // 4. CreateBook.
        let title = format!("The Mesh, part {round}");
        let step = format!("CreateBook({shelf})");
        let r = self
            .client
            .create_book(self.request(CreateBookRequest {
                shelf,
                book: Some(Book {
                    id: 0,
                    author: "mtls".to_owned(),
                    title: title.clone(),
                }),
            }))
            .await;
        if rec.cross_replica(&step, &r, &home) {
            return;
        }
        let Some((book, book_home)) = rec.check_value(&step, r, |b| {
            Ok((format!("book {} {:?}", b.id, b.title), b.id))
        }) else {
            return;
        };

        // 5. GetBook.
        let step = format!("GetBook({shelf}, {book})");
        let r = self
            .client
            .get_book(self.request(GetBookRequest { shelf, book }))
            .await;
        if rec.cross_replica(&step, &r, &book_home) {
            return;
        }
        rec.check(&step, r, |b| {
            if b.title == title {
                Ok(format!("{:?} by {}", b.title, b.author))
            } else {
                Err(format!("title {:?}, expected {title:?}", b.title))
            }
        });

        // 6. ListBooks.
        let step = format!("ListBooks({shelf})");
        let r = self
            .client
            .list_books(self.request(ListBooksRequest { shelf }))
            .await;
        if rec.cross_replica(&step, &r, &book_home) {
            return;
        }
        rec.check(&step, r, |l| {
            if l.books.iter().any(|b| b.id == book) {
                Ok(format!("{} books", l.books.len()))
            } else {
                Err(format!("book {book} is not listed"))
            }
        });

        // 7. DeleteBook.
        let step = format!("DeleteBook({shelf}, {book})");
        let r = self
            .client
            .delete_book(self.request(DeleteBookRequest { shelf, book }))
            .await;
        if rec.cross_replica(&step, &r, &book_home) {
            return;
        }
        rec.check(&step, r, |()| Ok("deleted".to_owned()));

        // 8. DeleteShelf.
        let step = format!("DeleteShelf({shelf})");
        let r = self
            .client
            .delete_shelf(self.request(DeleteShelfRequest { shelf }))
            .await;
        if rec.cross_replica(&step, &r, &home) {
            return;
        }
        rec.check(&step, r, |()| Ok("deleted".to_owned()));

        // 9. GetShelf of the deleted shelf: NOT_FOUND is the expected answer.
        let step = format!("GetShelf({shelf}) deleted");
        let r = self
            .client
            .get_shelf(self.request(GetShelfRequest { shelf }))
            .await;
        let replica = replica_of_result(&r);
        rec.caller(&r);
        let outcome = match r {
            Err(status) if status.code() == Code::NotFound => {
                Ok(format!("NOT_FOUND as expected: {}", status.message()))
            }
            Err(status) => Err((status.code(), status.message().to_owned())),
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

    fn check<T>(
        &mut self,
        step: &str,
        result: Result<tonic::Response<T>, Status>,
        verify: impl FnOnce(T) -> Result<String, String>,
    ) -> bool {
        self.check_value(step, result, |m| verify(m).map(|s| (s, ())))
            .is_some()
    }

    /// Records the call; on success returns the value and the replica that answered.
    fn check_value<T, V>(
        &mut self,
        step: &str,
        result: Result<tonic::Response<T>, Status>,
        verify: impl FnOnce(T) -> Result<(String, V), String>,
    ) -> Option<(V, Option<String>)> {
        let replica = replica_of_result(&result);
        self.caller(&result);
        let (outcome, value) = match result {
            Ok(response) => match verify(response.into_inner()) {
                Ok((summary, value)) => (Ok(summary), Some(value)),
                Err(problem) => (Err((Code::Ok, problem)), None),
            },
            Err(status) => (Err((status.code(), status.message().to_owned())), None),
        };
        self.push(step.to_owned(), replica.clone(), outcome);
        value.map(|v| (v, replica))
    }

    /// A NOT_FOUND from another replica than the one that created the resource: replicas
    /// with separate stores. Recorded, counted, and the round ends.
    fn cross_replica<T>(
        &mut self,
        step: &str,
        result: &Result<tonic::Response<T>, Status>,
        home: &Option<String>,
    ) -> bool {
        let replica = replica_of_result(result);
        match result {
            Err(status)
                if status.code() == Code::NotFound && replica.is_some() && replica != *home =>
            {
                self.report.cross_replica_misses += 1;
                let outcome = Ok(format!(
                    "NOT_FOUND: created on {}, this replica has its own store (round ends)",
                    home.as_deref().unwrap_or("?")
                ));
                self.push(step.to_owned(), replica, outcome);
                true
            }
            _ => false,
        }
    }
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
