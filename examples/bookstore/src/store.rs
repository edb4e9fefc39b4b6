//! The in-memory bookstore and its gRPC service.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use tonic::{Request, Response, Status, metadata::MetadataValue};

use mtls_tonic::PeerIdentityExt;

use crate::{
    CALLER_HEADER, REPLICA_HEADER, TLS_HEADER,
    faults::{FAIL_FIRST_ATTEMPT_HEADER, FailFirstAttempts},
    proto::{
        Book, CreateBookRequest, CreateShelfRequest, DeleteBookRequest, DeleteShelfRequest,
        GetBookRequest, GetShelfRequest, ListBooksRequest, ListBooksResponse, ListShelvesResponse,
        Shelf, bookstore_server::Bookstore,
    },
};

/// Shelves and their books, in memory. Cheap to clone (shared); replicas that share one
/// `Store` behave like stateless replicas over one database.
///
/// ```
/// let store = bookstore::Store::seeded();
/// let shelves = store.list_shelves();
/// assert_eq!(shelves[0].theme, "Fiction");
/// assert_eq!(store.list_books(1)?[0].title, "REAMDE");
/// # Ok::<(), tonic::Status>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Store {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    shelves: BTreeMap<i64, ShelfEntry>,
    next_shelf: i64,
}

#[derive(Debug)]
struct ShelfEntry {
    shelf: Shelf,
    books: BTreeMap<i64, Book>,
    next_book: i64,
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The sample's seed: shelf 1 "Fiction" with "REAMDE" by Neal Stephenson, shelf 2
    /// "Fantasy" with "A Game of Thrones" by George R.R. Martin.
    pub fn seeded() -> Self {
        let store = Self::new();
        for (theme, author, title) in [
            ("Fiction", "Neal Stephenson", "REAMDE"),
            ("Fantasy", "George R.R. Martin", "A Game of Thrones"),
        ] {
            let shelf = store.create_shelf(theme.to_owned());
            let _ = store.create_book(
                shelf.id,
                Book {
                    id: 0,
                    author: author.to_owned(),
                    title: title.to_owned(),
                },
            );
        }
        store
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated (each update is
        // one insert/remove), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every shelf, by id.
    pub fn list_shelves(&self) -> Vec<Shelf> {
        self.lock()
            .shelves
            .values()
            .map(|e| e.shelf.clone())
            .collect()
    }

    /// Creates a shelf with the next id.
    pub fn create_shelf(&self, theme: String) -> Shelf {
        let mut inner = self.lock();
        inner.next_shelf += 1;
        let shelf = Shelf {
            id: inner.next_shelf,
            theme,
        };
        inner.shelves.insert(
            shelf.id,
            ShelfEntry {
                shelf: shelf.clone(),
                books: BTreeMap::new(),
                next_book: 0,
            },
        );
        shelf
    }

    /// The shelf `id`, or NOT_FOUND.
    pub fn shelf(&self, id: i64) -> Result<Shelf, Status> {
        self.entry(id, |e| e.shelf.clone())
    }

    /// Deletes shelf `id` and its books, or NOT_FOUND.
    pub fn delete_shelf(&self, id: i64) -> Result<(), Status> {
        self.lock()
            .shelves
            .remove(&id)
            .map(drop)
            .ok_or_else(|| shelf_not_found(id))
    }

    /// The books of shelf `shelf`, or NOT_FOUND.
    pub fn list_books(&self, shelf: i64) -> Result<Vec<Book>, Status> {
        self.entry(shelf, |e| e.books.values().cloned().collect())
    }

    /// Adds `book` (its id is assigned) to shelf `shelf`, or NOT_FOUND.
    pub fn create_book(&self, shelf: i64, mut book: Book) -> Result<Book, Status> {
        let mut inner = self.lock();
        let entry = inner
            .shelves
            .get_mut(&shelf)
            .ok_or_else(|| shelf_not_found(shelf))?;
        entry.next_book += 1;
        book.id = entry.next_book;
        entry.books.insert(book.id, book.clone());
        Ok(book)
    }

    /// Book `book` of shelf `shelf`, or NOT_FOUND.
    pub fn book(&self, shelf: i64, book: i64) -> Result<Book, Status> {
        self.entry(shelf, |e| e.books.get(&book).cloned())?
            .ok_or_else(|| book_not_found(shelf, book))
    }

    /// Deletes book `book` of shelf `shelf`, or NOT_FOUND.
    pub fn delete_book(&self, shelf: i64, book: i64) -> Result<(), Status> {
        let mut inner = self.lock();
        let entry = inner
            .shelves
            .get_mut(&shelf)
            .ok_or_else(|| shelf_not_found(shelf))?;
        entry
            .books
            .remove(&book)
            .map(drop)
            .ok_or_else(|| book_not_found(shelf, book))
    }

    fn entry<T>(&self, id: i64, f: impl FnOnce(&ShelfEntry) -> T) -> Result<T, Status> {
        self.lock()
            .shelves
            .get(&id)
            .map(f)
            .ok_or_else(|| shelf_not_found(id))
    }
}

fn shelf_not_found(id: i64) -> Status {
    Status::not_found(format!("shelf {id} not found"))
}

fn book_not_found(shelf: i64, book: i64) -> Status {
    Status::not_found(format!("book {book} not found on shelf {shelf}"))
}

/// The gRPC `endpoints.examples.bookstore.Bookstore` service over a [`Store`]. Every
/// response and error carries the replica's name in [`REPLICA_HEADER`].
///
/// ```
/// use bookstore::{BookstoreService, Store, proto::bookstore_server::BookstoreServer};
/// let service = BookstoreServer::new(BookstoreService::new(Store::seeded(), "replica-1")?);
/// # let _ = service;
/// # Ok::<(), bookstore::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct BookstoreService {
    store: Store,
    replica: MetadataValue<tonic::metadata::Ascii>,
    name: Arc<str>,
    faults: Option<FailFirstAttempts>,
    echo_caller: bool,
}

impl BookstoreService {
    /// The service over `store`, answering as `replica` (ASCII, a valid header value).
    pub fn new(store: Store, replica: &str) -> crate::Result<Self> {
        let value = replica.parse().map_err(|_| {
            crate::Error::Config(format!(
                "replica name {replica:?} is not a valid header value (printable ASCII)"
            ))
        })?;
        Ok(Self {
            store,
            replica: value,
            name: replica.into(),
            faults: None,
            echo_caller: true,
        })
    }

    /// Demo mode: fail the first attempt of each call that carries
    /// [`FAIL_FIRST_ATTEMPT_HEADER`] (see [`crate::faults`]); replicas given clones of one
    /// `faults` fail each call id once between them. Off unless set (`bookstore-mesh` sets
    /// it on its replicas; `bookstore-server` never does).
    ///
    /// ```
    /// use bookstore::{BookstoreService, Store, faults::FailFirstAttempts};
    /// let faults = FailFirstAttempts::new();
    /// let service = BookstoreService::new(Store::seeded(), "r1")?.fail_first_attempts(faults.clone());
    /// # let _ = service;
    /// # Ok::<(), bookstore::Error>(())
    /// ```
    pub fn fail_first_attempts(mut self, faults: FailFirstAttempts) -> Self {
        self.faults = Some(faults);
        self
    }

    /// Whether responses also carry who called ([`CALLER_HEADER`]) and what our handshake
    /// with the caller negotiated ([`TLS_HEADER`]); on by default (the mesh demo shows
    /// them). The benchmarks turn it off so that every scenario's replicas answer the same
    /// bytes (only [`REPLICA_HEADER`]), whatever the transport knows about the caller.
    ///
    /// ```
    /// use bookstore::{BookstoreService, Store};
    /// let service = BookstoreService::new(Store::seeded(), "r1")?.echo_caller(false);
    /// # let _ = service;
    /// # Ok::<(), bookstore::Error>(())
    /// ```
    pub fn echo_caller(mut self, on: bool) -> Self {
        self.echo_caller = on;
        self
    }

    /// Who called, when responses echo it.
    fn who<T>(&self, request: &Request<T>) -> Caller {
        if self.echo_caller {
            who(request)
        } else {
            Caller {
                id: None,
                tls: None,
            }
        }
    }

    /// The replica name.
    pub fn replica(&self) -> &str {
        &self.name
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The deliberate failure of a call's first attempt, in demo mode (answered as every
    /// error is, with the replica's name).
    fn injected<T, R>(&self, request: &Request<T>) -> Option<Result<Response<R>, Status>> {
        let faults = self.faults.as_ref()?;
        let id = request
            .metadata()
            .get(FAIL_FIRST_ATTEMPT_HEADER)?
            .to_str()
            .ok()?;
        let status = faults.first_attempt(id)?;
        Some(self.answer(self.who(request), Err(status)))
    }

    fn answer<T>(&self, caller: Caller, result: Result<T, Status>) -> Result<Response<T>, Status> {
        let tls = caller.tls.and_then(|t| MetadataValue::try_from(t).ok());
        let caller = caller.id.and_then(|c| MetadataValue::try_from(c).ok());
        let stamp = |metadata: &mut tonic::metadata::MetadataMap| {
            metadata.insert(REPLICA_HEADER, self.replica.clone());
            if let Some(caller) = caller {
                metadata.insert(CALLER_HEADER, caller);
            }
            if let Some(tls) = tls {
                metadata.insert(TLS_HEADER, tls);
            }
        };
        match result {
            Ok(message) => {
                let mut response = Response::new(message);
                stamp(response.metadata_mut());
                Ok(response)
            }
            Err(mut status) => {
                stamp(status.metadata_mut());
                Err(status)
            }
        }
    }
}

#[tonic::async_trait]
impl Bookstore for BookstoreService {
    async fn list_shelves(
        &self,
        request: Request<()>,
    ) -> Result<Response<ListShelvesResponse>, Status> {
        if let Some(failed) = self.injected(&request) {
            return failed;
        }
        self.answer(
            self.who(&request),
            Ok(ListShelvesResponse {
                shelves: self.store.list_shelves(),
            }),
        )
    }

    async fn create_shelf(
        &self,
        request: Request<CreateShelfRequest>,
    ) -> Result<Response<Shelf>, Status> {
        if let Some(failed) = self.injected(&request) {
            return failed;
        }
        let caller = self.who(&request);
        let result = match request.into_inner().shelf {
            None => Err(Status::invalid_argument("CreateShelf: shelf is required")),
            Some(shelf) if shelf.theme.trim().is_empty() => Err(Status::invalid_argument(
                "CreateShelf: shelf.theme must not be empty",
            )),
            Some(shelf) => Ok(self.store.create_shelf(shelf.theme)),
        };
        self.answer(caller, result)
    }

    async fn get_shelf(
        &self,
        request: Request<GetShelfRequest>,
    ) -> Result<Response<Shelf>, Status> {
        if let Some(failed) = self.injected(&request) {
            return failed;
        }
        self.answer(
            self.who(&request),
            self.store.shelf(request.get_ref().shelf),
        )
    }

    async fn delete_shelf(
        &self,
        request: Request<DeleteShelfRequest>,
    ) -> Result<Response<()>, Status> {
        if let Some(failed) = self.injected(&request) {
            return failed;
        }
        self.answer(
            self.who(&request),
            self.store.delete_shelf(request.get_ref().shelf),
        )
    }

    async fn list_books(
        &self,
        request: Request<ListBooksRequest>,
    ) -> Result<Response<ListBooksResponse>, Status> {
        if let Some(failed) = self.injected(&request) {
            return failed;
        }
        let books = self.store.list_books(request.get_ref().shelf);
        self.answer(
            self.who(&request),
            books.map(|books| ListBooksResponse { books }),
        )
    }

    async fn create_book(
        &self,
        request: Request<CreateBookRequest>,
    ) -> Result<Response<Book>, Status> {
        if let Some(failed) = self.injected(&request) {
            return failed;
        }
        let caller = self.who(&request);
        let CreateBookRequest { shelf, book } = request.into_inner();
        let result = match book {
            None => Err(Status::invalid_argument("CreateBook: book is required")),
            Some(book) if book.title.trim().is_empty() => Err(Status::invalid_argument(
                "CreateBook: book.title must not be empty",
            )),
            Some(book) => self.store.create_book(shelf, book),
        };
        self.answer(caller, result)
    }

    async fn get_book(&self, request: Request<GetBookRequest>) -> Result<Response<Book>, Status> {
        if let Some(failed) = self.injected(&request) {
            return failed;
        }
        let r = request.get_ref();
        self.answer(self.who(&request), self.store.book(r.shelf, r.book))
    }

    async fn delete_book(
        &self,
        request: Request<DeleteBookRequest>,
    ) -> Result<Response<()>, Status> {
        if let Some(failed) = self.injected(&request) {
            return failed;
        }
        let r = request.get_ref();
        self.answer(self.who(&request), self.store.delete_book(r.shelf, r.book))
    }
}

/// Who called, as the replica reports it.
struct Caller {
    /// [`caller`].
    id: Option<String>,
    /// What our own handshake with the caller negotiated (proxyless only: behind a
    /// sidecar the replica speaks plaintext).
    tls: Option<String>,
}

fn who<T>(request: &Request<T>) -> Caller {
    Caller {
        id: caller(request),
        tls: request
            .peer_identity()
            .and_then(|p| p.negotiated())
            .map(ToString::to_string),
    }
}

/// The caller's SPIFFE ID: from our own mTLS handshake (proxyless), else from the
/// `URI=` of the last element of `x-forwarded-client-cert` (set by an Envoy sidecar with
/// `forward_client_cert_details: SANITIZE_SET`, so a client cannot forge it).
pub fn caller<T>(request: &Request<T>) -> Option<String> {
    if let Some(id) = request.peer_identity().and_then(|p| p.spiffe_id()) {
        return Some(id.to_string());
    }
    let xfcc = request
        .metadata()
        .get("x-forwarded-client-cert")?
        .to_str()
        .ok()?;
    xfcc_uri(xfcc)
}

/// The `URI=` of the last (nearest) element of an `x-forwarded-client-cert` value.
fn xfcc_uri(xfcc: &str) -> Option<String> {
    let last = xfcc.rsplit(',').next()?;
    last.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("uri")
            .then(|| value.trim().trim_matches('"').to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_store_and_errors() {
        let store = Store::seeded();
        assert_eq!(store.list_shelves().len(), 2);
        assert_eq!(store.list_books(2).unwrap()[0].author, "George R.R. Martin");
        let shelf = store.create_shelf("Poetry".into());
        assert_eq!(shelf.id, 3);
        let book = store
            .create_book(
                3,
                Book {
                    id: 0,
                    author: "a".into(),
                    title: "t".into(),
                },
            )
            .unwrap();
        assert_eq!(store.book(3, book.id).unwrap().title, "t");
        store.delete_book(3, book.id).unwrap();
        let e = store.book(3, book.id).unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert_eq!(e.message(), "book 1 not found on shelf 3");
        store.delete_shelf(3).unwrap();
        assert_eq!(store.shelf(3).unwrap_err().message(), "shelf 3 not found");
        assert_eq!(
            store.delete_shelf(3).unwrap_err().code(),
            tonic::Code::NotFound
        );
    }

    #[tokio::test]
    async fn service_answers_with_replica_header_and_invalid_argument() {
        let service = BookstoreService::new(Store::seeded(), "r1").unwrap();
        let ok = service.list_shelves(Request::new(())).await.unwrap();
        assert_eq!(ok.metadata().get(REPLICA_HEADER).unwrap(), "r1");
        let err = service
            .create_shelf(Request::new(CreateShelfRequest { shelf: None }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(err.metadata().get(REPLICA_HEADER).unwrap(), "r1");
        assert!(BookstoreService::new(Store::new(), "bad\nname").is_err());
        let mut request = Request::new(());
        request.metadata_mut().insert(
            "x-forwarded-client-cert",
            "By=spiffe://td/sa/server;Hash=ab12;URI=spiffe://td/ns/default/sa/client"
                .parse()
                .unwrap(),
        );
        let ok = service.list_shelves(request).await.unwrap();
        assert_eq!(
            ok.metadata().get(CALLER_HEADER).unwrap(),
            "spiffe://td/ns/default/sa/client"
        );
        assert_eq!(xfcc_uri("URI=a,Hash=x;URI=\"b\""), Some("b".to_owned()));
        assert_eq!(xfcc_uri("Hash=x"), None);
    }

    /// Demo mode fails the first attempt of a marked call once across the replicas that
    /// share the faults, and serves every later attempt; without demo mode, or without the
    /// header, the header changes nothing.
    #[tokio::test]
    async fn demo_mode_fails_a_marked_calls_first_attempt_once_across_replicas() {
        let marked = |id: &str| {
            let mut request = Request::new(());
            request
                .metadata_mut()
                .insert(FAIL_FIRST_ATTEMPT_HEADER, id.parse().unwrap());
            request
        };
        let faults = FailFirstAttempts::new();
        let store = Store::seeded();
        let r1 = BookstoreService::new(store.clone(), "r1")
            .unwrap()
            .fail_first_attempts(faults.clone());
        let r2 = BookstoreService::new(store.clone(), "r2")
            .unwrap()
            .fail_first_attempts(faults.clone());

        let first = r1.list_shelves(marked("call-1")).await.unwrap_err();
        assert_eq!(first.code(), tonic::Code::Unavailable, "{first:?}");
        assert!(
            first.message().contains("\"call-1\""),
            "{}",
            first.message()
        );
        assert_eq!(first.metadata().get(REPLICA_HEADER).unwrap(), "r1");
        // The retry reaches the other replica: served.
        let retry = r2.list_shelves(marked("call-1")).await.unwrap();
        assert_eq!(retry.metadata().get(REPLICA_HEADER).unwrap(), "r2");
        assert!(r1.list_shelves(marked("call-1")).await.is_ok());
        // Another call id fails once too, on any method, before the method's effect.
        let shelves = store.list_shelves().len();
        let mut create = Request::new(CreateShelfRequest {
            shelf: Some(Shelf {
                id: 0,
                theme: "t".into(),
            }),
        });
        create
            .metadata_mut()
            .insert(FAIL_FIRST_ATTEMPT_HEADER, "call-2".parse().unwrap());
        let err = r2.create_shelf(create).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert_eq!(store.list_shelves().len(), shelves, "nothing created");
        assert_eq!(faults.failed(), 2);
        assert!(r1.list_shelves(Request::new(())).await.is_ok());

        // Not in demo mode: the header is ignored.
        let plain = BookstoreService::new(store, "r3").unwrap();
        assert!(plain.list_shelves(marked("call-3")).await.is_ok());
        assert_eq!(faults.failed(), 2);
    }
}
