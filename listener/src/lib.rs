//! One way to serve HTTP/1.1 on a TCP listener, shared by every listener of the project (the
//! API's edge, the metrics listener, the mock and the tests' validating proxy), so that none of
//! them can be held by slow clients:
//!
//! - **a cap on open connections**: past it the listener stops accepting, so new connections
//!   wait in the kernel's backlog until one closes (as Go's `netutil.LimitListener` does);
//! - **a header-read timeout**, counted from the first byte of a request head: a client that
//!   sends half a head is closed when it runs out;
//! - **an idle timeout**: a connection on which no byte moves for that long, while no request
//!   is being handled, is closed (a kept-alive connection between requests, or a stalled upload
//!   or download);
//! - **back-off when `accept` fails** (a full file-descriptor table fails every call at once),
//!   from 5 ms doubling to 1 s, as Go's `net/http` does;
//! - **graceful shutdown**: stop accepting, let each connection finish its request, then close;
//! - **refused heads in the envelope**: a head hyper cannot read (past `max_header_fields` or
//!   its ~400 KiB buffer, a target over 64 KiB, not HTTP/1.1) gets hyper's status, `431`,
//!   `414` or `400`, with the spec's error envelope (`exports_spec::errors::refused_head`)
//!   instead of hyper's empty body: hyper has no hook for it, so its answer is recognised as it
//!   is written (nothing is being handled or owed, and it has hyper's exact form) and replaced.
//!
//! hyper's own header-read timeout is off: it starts when hyper waits for a head, so it would
//! also close kept-alive connections as soon as the (short) head limit passed, and a load
//! balancer that keeps connections open longer than its backend would then see resets.

pub mod log;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// What a listener allows one connection, and how many it keeps open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time from a request head's first byte to its last.
    pub header_read_timeout: Duration,
    /// Time a connection may stay open with no byte moving and no request being handled.
    pub idle_timeout: Duration,
    /// Connections open at once; more wait until one closes.
    pub max_connections: usize,
    /// Header fields hyper parses in one request head; past it, the listener answers `431`
    /// in the envelope and closes the connection. Handlers that want to answer an oversized
    /// head themselves (with its figures) set their own, lower, limit.
    pub max_header_fields: usize,
}

impl Default for Limits {
    /// What a public service would use: 10 s for a request head, and nginx's 75 s keep-alive,
    /// longer than the 60 s idle timeout of common load balancers (which must close first).
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            max_connections: 4096,
            // Above the API's own limit of 96 (`exports_spec::limits::MAX_HEADER_FIELDS`, and
            // hyper's default of 100), so that the API answers up to 256 fields in its error
            // envelope.
            max_header_fields: 256,
        }
    }
}

const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_LAST: Duration = Duration::from_secs(1);
/// A listener that stays at its cap, or keeps failing to accept, says so at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// A listener being served; dropping it leaves it running, `shutdown` stops it.
pub struct Serving {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    open: Arc<Semaphore>,
    max_connections: usize,
}

impl Serving {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.max_connections - self.open.available_permits()
    }

    /// Stops accepting, asks every connection to close once its request is answered, and waits
    /// up to `grace` for them; what is left then is dropped.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(grace, self.open.acquire_many(all)).await;
    }
}

/// What a listener calls for each request, with the address of its peer: any async closure
/// that answers with a body hyper can send.
pub trait Handler: Send + Sync + 'static {
    type Body: http_body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static;
    type Answer: Future<Output = Response<Self::Body>> + Send + 'static;
    fn handle(&self, request: Request<Incoming>, peer: SocketAddr) -> Self::Answer;
}

impl<F, Fut, B> Handler for F
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Body = B;
    type Answer = Fut;

    fn handle(&self, request: Request<Incoming>, peer: SocketAddr) -> Fut {
        self(request, peer)
    }
}

/// Serves `listener` with `handler`, which gets each request and the address of its peer.
/// (The `Fn` bound is `Handler`'s own; spelled out, it lets closures infer their argument types.)
pub fn serve<H, Answer>(listener: TcpListener, limits: Limits, handler: H) -> io::Result<Serving>
where
    H: Fn(Request<Incoming>, SocketAddr) -> Answer + Handler,
{
    assert!(
        limits.max_connections > 0,
        "a listener needs room for one connection"
    );
    let local_addr = listener.local_addr()?;
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopping) = watch::channel(false);
    let task = tokio::spawn(accept_loop(
        listener,
        limits,
        Arc::new(handler),
        open.clone(),
        stopping,
    ));
    Ok(Serving {
        local_addr,
        stop,
        task,
        open,
        max_connections: limits.max_connections,
    })
}

async fn accept_loop<H: Handler>(
    listener: TcpListener,
    limits: Limits,
    handler: Arc<H>,
    open: Arc<Semaphore>,
    mut stopping: watch::Receiver<bool>,
) {
    let local_addr = listener.local_addr().ok();
    let mut backoff = ACCEPT_BACKOFF_FIRST;
    let mut last_warned: Option<Instant> = None;
    let mut time_to_warn = move || {
        let due = last_warned.is_none_or(|at| at.elapsed() >= WARN_EVERY);
        if due {
            last_warned = Some(Instant::now());
        }
        due
    };
    loop {
        let permit = match open.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if time_to_warn() {
                    tracing::warn!(
                        ?local_addr,
                        max_connections = limits.max_connections,
                        "connection limit reached; new connections wait until one closes"
                    );
                }
                tokio::select! {
                    permit = open.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                    _ = stop_requested(&mut stopping) => break,
                }
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop_requested(&mut stopping) => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF_FIRST;
                let _ = stream.set_nodelay(true);
                let connection =
                    serve_connection(stream, peer, limits, handler.clone(), permit, stopping.clone());
                tokio::spawn(connection);
            }
            Err(error) => {
                if time_to_warn() {
                    tracing::warn!(?local_addr, %error, "accepting a connection failed; backing off");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop_requested(&mut stopping) => break,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_LAST);
            }
        }
    }
}

async fn serve_connection<H: Handler>(
    stream: TcpStream,
    peer: SocketAddr,
    limits: Limits,
    handler: Arc<H>,
    _permit: OwnedSemaphorePermit,
    mut stopping: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request| {
            let handling = Handling::start(activity.clone());
            let response = handler.handle(request, peer);
            async move {
                let response = response.await;
                handling.0.state().heads_owed += 1;
                drop(handling);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
        limits,
        replacing: None,
    });
    let mut connection = pin!(hyper::server::conn::http1::Builder::new()
        .header_read_timeout(None)
        .max_headers(limits.max_header_fields)
        .serve_connection(io, service));
    tokio::select! {
        _ = connection.as_mut() => return,
        expired = activity.expired(&limits) => {
            tracing::debug!(%peer, ?expired, "closing a connection");
            return;
        }
        _ = stop_requested(&mut stopping) => {}
    }
    // Shutting down: the request in flight is answered, then the connection closes.
    connection.as_mut().graceful_shutdown();
    tokio::select! {
        _ = connection => {}
        _ = activity.expired(&limits) => {}
    }
}

/// Resolves once `shutdown` was called; never when the `Serving` was dropped instead.
async fn stop_requested(stopping: &mut watch::Receiver<bool>) {
    if stopping.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Why a connection was closed by its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    HeaderRead,
    Idle,
}

/// What the timeouts of one connection are measured from. Nothing is told when it changes:
/// `expired` looks at it again at least once per header-read timeout, which is often enough
/// (see there), so a request costs no wake-up and no timer of its own.
struct Activity {
    state: Mutex<ActivityState>,
}

struct ActivityState {
    last_byte: Instant,
    /// When the first byte of a request head arrived, while no request is being handled.
    head_started: Option<Instant>,
    requests_handled_now: usize,
    /// Responses a handler returned whose head hyper has not written yet.
    heads_owed: usize,
}

impl Activity {
    fn new() -> Self {
        Self {
            state: Mutex::new(ActivityState {
                last_byte: Instant::now(),
                head_started: None,
                requests_handled_now: 0,
                heads_owed: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn bytes_read(&self) {
        let mut state = self.state();
        state.last_byte = Instant::now();
        if state.requests_handled_now == 0 && state.head_started.is_none() {
            state.head_started = Some(state.last_byte);
        }
    }

    fn bytes_written(&self) {
        self.state().last_byte = Instant::now();
    }

    /// Notes what a write holds: a response head owed by a handler, or hyper's own refusal
    /// of a head it could not read (its status), which is then to be replaced.
    fn writing(&self, bytes: &[u8]) -> Option<u16> {
        let mut state = self.state();
        if !bytes.starts_with(b"HTTP/1.1 ") {
            return None;
        }
        if state.heads_owed > 0 {
            state.heads_owed -= 1;
            return None;
        }
        let reading_a_head = state.requests_handled_now == 0 && state.head_started.is_some();
        reading_a_head.then(|| hypers_refusal(bytes)).flatten()
    }

    /// Resolves when the connection has outlived one of its limits. It wakes at the earlier
    /// of the deadline it sees and one header-read timeout later: a head that starts after a
    /// look expires no earlier than that timeout after it, so the next look is in time for
    /// it, and a deadline that moved later (bytes came) is looked at again rather than met.
    async fn expired(&self, limits: &Limits) -> Expired {
        loop {
            let now = Instant::now();
            let next_look = now + limits.header_read_timeout;
            let deadline = {
                let state = self.state();
                match (state.head_started, state.requests_handled_now) {
                    (Some(started), _) => Some((started + limits.header_read_timeout, Expired::HeaderRead)),
                    (None, 0) => Some((state.last_byte + limits.idle_timeout, Expired::Idle)),
                    // The handler has its own time limit.
                    (None, _) => None,
                }
            };
            match deadline {
                Some((at, expired)) if at <= now => return expired,
                Some((at, _)) => tokio::time::sleep_until(at.min(next_look)).await,
                None => tokio::time::sleep_until(next_look).await,
            }
        }
    }
}

/// A request between its head being read and its response head being returned.
struct Handling(Arc<Activity>);

impl Handling {
    fn start(activity: Arc<Activity>) -> Self {
        {
            let mut state = activity.state();
            state.requests_handled_now += 1;
            state.head_started = None;
        }
        Self(activity)
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.requests_handled_now -= 1;
        state.last_byte = Instant::now();
    }
}

/// hyper's answer to a head it could not read, if these bytes are one: a status line with one
/// of the statuses it uses for that, `connection: close`, `content-length: 0` and `date`,
/// nothing else (`hyper::proto::h1::role::Server::on_error`).
fn hypers_refusal(bytes: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(bytes).ok().filter(|text| text.len() < 256)?;
    let status: u16 = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let (_, headers) = text.split_once("\r\n")?;
    let hyper_form = headers.starts_with("connection: close\r\ncontent-length: 0\r\ndate: ")
        && headers.ends_with("\r\n\r\n")
        && headers.matches("\r\n").count() == 4;
    (hyper_form && matches!(status, 400 | 414 | 431)).then_some(status)
}

/// The answer that replaces hyper's refusal: its status line and date, then the envelope as
/// the server's edge would send it (`exports_spec::errors::envelope`, with the headers of
/// every answer, `exports_spec::headers::add_common`), and the connection closed.
fn refusal_in_the_envelope(refusal: &[u8], status: u16, limits: &Limits) -> Vec<u8> {
    let text = String::from_utf8_lossy(refusal);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let date = lines.find(|line| line.starts_with("date: ")).unwrap_or_default();
    let request_id = exports_spec::random_uuid().to_string();
    let body = exports_spec::errors::refused_head(status, limits.max_header_fields);
    let status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST);
    let mut response = exports_spec::errors::envelope(status, body, &request_id);
    exports_spec::headers::add_common(response.headers_mut(), &request_id);
    let (parts, body) = response.into_parts();
    let mut answer = format!("{status_line}\r\n").into_bytes();
    for (name, value) in &parts.headers {
        answer.extend_from_slice(name.as_str().as_bytes());
        answer.extend_from_slice(b": ");
        answer.extend_from_slice(value.as_bytes());
        answer.extend_from_slice(b"\r\n");
    }
    answer.extend_from_slice(
        format!(
            "content-length: {}\r\nconnection: close\r\n{date}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    answer.extend_from_slice(&body);
    answer
}

/// The connection's stream, noting when bytes move.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
    limits: Limits,
    /// The envelope being written in place of hyper's refusal, and how much of it is out.
    replacing: Option<(Vec<u8>, usize)>,
}

impl Watched {
    /// Writes the replacement for hyper's refusal; ready once all of it is out.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = self.replacing.as_mut() {
            if *written == bytes.len() {
                self.replacing = None;
                break;
            }
            match Pin::new(&mut self.stream).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    *written += n;
                    self.activity.bytes_written();
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Starts replacing `bytes` if they are hyper's refusal of a head; then writes the
    /// replacement and reports `bytes` written.
    fn poll_replaced(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Option<Poll<io::Result<usize>>> {
        if self.replacing.is_none() {
            let status = self.activity.writing(bytes)?;
            self.replacing = Some((refusal_in_the_envelope(bytes, status, &self.limits), 0));
        }
        Some(self.poll_replacement(cx).map_ok(|()| bytes.len()))
    }
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(replaced) = this.poll_replaced(cx, buf) {
            return replaced;
        }
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            this.activity.bytes_written();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // hyper's refusal is small: gather it to look at it whole.
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
        if first.starts_with(b"HTTP/1.1 ") {
            let gathered: Vec<u8>;
            let whole = if total < 256 && first.len() < total {
                gathered = bufs.iter().flat_map(|b| b.iter().copied()).collect();
                &gathered[..]
            } else {
                first
            };
            if let Some(replaced) = this.poll_replaced(cx, whole) {
                return replaced.map_ok(|_| total);
            }
        }
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            this.activity.bytes_written();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::{mpsc, oneshot};

    const PROMPTLY: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn shutdown_answers_the_request_in_flight_then_stops_accepting() {
        let (entered, mut handler_entered) = mpsc::unbounded_channel::<()>();
        let (release, released) = oneshot::channel::<()>();
        let released = Arc::new(Mutex::new(Some(released)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let serving = serve(listener, Limits::default(), move |_request, _peer| {
            let (entered, released) = (entered.clone(), released.lock().unwrap().take());
            async move {
                let _ = entered.send(());
                if let Some(released) = released {
                    let _ = released.await;
                }
                Response::new(Full::new(Bytes::from_static(b"done")))
            }
        })
        .unwrap();
        let addr = serving.local_addr();

        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        tokio::time::timeout(PROMPTLY, handler_entered.recv())
            .await
            .unwrap();
        let shutdown = tokio::spawn(serving.shutdown(PROMPTLY));
        release.send(()).unwrap();

        let mut response = String::new();
        tokio::time::timeout(PROMPTLY, client.read_to_string(&mut response))
            .await
            .unwrap()
            .unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("done"), "{response}");
        tokio::time::timeout(PROMPTLY, shutdown).await.unwrap().unwrap();
        assert!(TcpStream::connect(addr).await.is_err());
    }

    /// How long a connection stays open once `start` is sent, then nothing more: read until
    /// the server closes it. On tokio's paused clock, which moves to the next timer whenever
    /// nothing else can run, so the figure is the server's deadline whatever the machine.
    async fn open_after(limits: Limits, idle_first: Duration, start: &[u8]) -> Duration {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let serving = serve(listener, limits, |_request, _peer| async {
            Response::new(Full::new(Bytes::from_static(b"done")))
        })
        .unwrap();
        let mut client = TcpStream::connect(serving.local_addr()).await.unwrap();
        tokio::time::sleep(idle_first).await;
        let sent = Instant::now();
        client.write_all(start).await.unwrap();
        let mut received = Vec::new();
        let _ = client.read_to_end(&mut received).await;
        sent.elapsed()
    }

    const LIMITS: Limits = Limits {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(75),
        max_connections: 16,
        max_header_fields: 100,
    };

    #[tokio::test(start_paused = true)]
    async fn a_head_begun_between_two_looks_is_closed_at_its_own_deadline() {
        // The connection looked at its deadlines when it opened; the head begins 7 s later,
        // between that look and the next.
        let open = open_after(LIMITS, Duration::from_secs(7), b"GET / HTTP/1.1\r\nhost: t").await;
        let limit = LIMITS.header_read_timeout;
        assert!(
            open >= limit && open < limit + Duration::from_secs(1),
            "closed {open:?} after the head began"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_answered_connection_is_closed_at_its_idle_deadline() {
        let open = open_after(LIMITS, Duration::ZERO, b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
        let limit = LIMITS.idle_timeout;
        assert!(
            open >= limit && open < limit + Duration::from_secs(1),
            "closed {open:?} after the request"
        );
    }

    /// Sends raw bytes and reads the answer until the server closes.
    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(request).await.unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(PROMPTLY, client.read_to_end(&mut response))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8(response).unwrap()
    }

    /// What a handler may answer: a body of exactly the form hyper's refusals have.
    const HYPER_FORM: &[u8] =
        b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Tue, 24 Nov 2026 20:52:48 GMT\r\n\r\n";

    #[tokio::test]
    async fn heads_hyper_cannot_read_are_refused_in_the_envelope() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let limits = Limits {
            max_header_fields: 8,
            ..Limits::default()
        };
        let serving = serve(listener, limits, |_request, _peer| async {
            Response::new(Full::new(Bytes::from_static(HYPER_FORM)))
        })
        .unwrap();
        let addr = serving.local_addr();
        let fields: String = (0..9).map(|i| format!("x-field-{i}: 1\r\n")).collect();
        let refused = [
            (
                format!("GET / HTTP/1.1\r\nhost: t\r\n{fields}\r\n"),
                431,
                "request_header_fields_too_large",
            ),
            (
                format!("GET /{} HTTP/1.1\r\nhost: t\r\n\r\n", "a".repeat(70_000)),
                414,
                "uri_too_long",
            ),
            ("NOT HTTP AT ALL\r\n\r\n".to_string(), 400, "invalid_request"),
        ];
        for (request, status, code) in refused {
            let response = exchange(addr, request.as_bytes()).await;
            let (head, body) = response.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
            for header in [
                "content-type: application/json",
                "connection: close",
                "cache-control: no-store",
                "x-content-type-options: nosniff",
            ] {
                assert!(head.contains(&format!("\r\n{header}\r\n")), "{head}");
            }
            assert!(head.contains("\r\ndate: "), "{head}");
            assert!(
                head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())),
                "{head}"
            );
            let envelope: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(envelope["error"]["code"], code, "{body}");
            let request_id = envelope["error"]["request_id"].as_str().unwrap();
            assert!(
                head.contains(&format!("\r\nx-request-id: {request_id}\r\n")),
                "{head}"
            );
        }
        // A handler's answer is never taken for hyper's, whatever its body holds.
        let response = exchange(addr, b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
        assert!(
            response.ends_with(std::str::from_utf8(HYPER_FORM).unwrap()),
            "{response}"
        );
        serving.shutdown(PROMPTLY).await;
    }
}
