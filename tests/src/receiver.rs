//! A webhook receiver for tests: a real HTTP server on loopback that records each request and
//! answers as its script says (down, an error status, no answer at all), so a test drives a
//! delivery through failures deterministically.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use tokio::sync::{mpsc, watch};

/// How long `Receiver::next` waits at most: a generous bound, not a measure.
const WAIT_AT_MOST: Duration = Duration::from_secs(60);

/// One request a receiver got.
#[derive(Debug)]
pub struct Received {
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// What a receiver does with each connection, in order; once the script is used up, it takes
/// every request with `200`.
#[derive(Clone, Copy)]
pub enum Step {
    /// Closes the connection before reading anything: the receiver is down.
    Drop,
    /// Answers with this status.
    Answer(u16),
    /// Takes the request and never answers.
    Hold,
    /// Takes the request and answers `200` once the test calls `Receiver::release` (at once
    /// after that): a slow receiver whose slowness the test controls, not the clock.
    HoldUntilReleased,
}

/// An HTTP receiver on loopback that records every request and follows its script.
pub struct Receiver {
    pub addr: SocketAddr,
    received: mpsc::UnboundedReceiver<Received>,
    released: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(script: Vec<Step>) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (sender, received) = mpsc::unbounded_channel();
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let (released, release) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let step = script.lock().unwrap().pop_front().unwrap_or(Step::Answer(200));
                let (status, hold, gated) = match step {
                    Step::Drop => {
                        drop(stream);
                        continue;
                    }
                    Step::Answer(status) => (status, false, false),
                    Step::Hold => (200, true, false),
                    Step::HoldUntilReleased => (200, false, true),
                };
                let sender = sender.clone();
                let release = release.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                            let sender = sender.clone();
                            let mut release = release.clone();
                            async move {
                                let (parts, body) = request.into_parts();
                                let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                                let _ = sender.send(Received {
                                    headers: parts.headers,
                                    body,
                                });
                                if hold {
                                    std::future::pending::<()>().await;
                                }
                                if gated {
                                    let _ = release.wait_for(|released| *released).await;
                                }
                                let mut response = Response::new(Full::new(Bytes::new()));
                                *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                                Ok::<_, Infallible>(response)
                            }
                        });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(false)
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            received,
            released,
            task,
        })
    }

    /// Every request held by `Step::HoldUntilReleased`, now and later, is answered.
    pub fn release(&self) {
        self.released.send_replace(true);
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks/exports", self.addr)
    }

    /// The next request, within a generous bound.
    pub async fn next(&mut self) -> anyhow::Result<Received> {
        tokio::time::timeout(WAIT_AT_MOST, self.received.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the receiver stopped"))
    }
}

impl Receiver {
    /// A request already received, if any (without waiting).
    pub fn try_next(&mut self) -> Option<Received> {
        self.received.try_recv().ok()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Verified with the official library, as a receiver would.
pub fn verify(secret: &str, received: &Received) -> Result<(), standardwebhooks::WebhookError> {
    standardwebhooks::Webhook::new(secret)?.verify(&received.body, &received.headers)
}
