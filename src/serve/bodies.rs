//! Body wrappers of the accept loop: a request body must arrive by a deadline (and tells
//! whether it was read to its end), and a response body keeps its connection busy until it is
//! sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use hyper::body::{Frame, Incoming, SizeHint};

use super::connections::Busy;

/// A request body that fails once its deadline passes. A client that sends a head and then
/// trickles the body (a byte every few seconds) keeps its connection busy, so neither the
/// header-read timeout nor eviction closes it; the deadline does.
pub struct Deadline {
    body: Incoming,
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    ended: Arc<AtomicBool>,
}

/// Whether a request body was read to its end (an empty body counts as read).
#[derive(Clone)]
pub struct BodyEnd(Arc<AtomicBool>);

impl BodyEnd {
    /// True once the whole body was read.
    pub fn reached(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl Deadline {
    /// `body` must be read completely within `timeout` from now.
    pub fn new(body: Incoming, timeout: Duration) -> (Deadline, BodyEnd) {
        let ended = Arc::new(AtomicBool::new(body.is_end_stream()));
        let deadline = Deadline {
            body,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            ended: ended.clone(),
        };
        (deadline, BodyEnd(ended))
    }
}

/// The error a late body ends with; handlers report it like any unreadable body.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(Duration);

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            if frame.is_none() || self.body.is_end_stream() {
                self.ended.store(true, Ordering::Relaxed);
            }
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout(self.timeout).into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A response body that keeps its connection busy until it is sent (or dropped).
pub struct Tracked {
    body: Body,
    _busy: Busy,
}

impl Tracked {
    /// Holds `busy` for as long as `body` lives.
    pub fn new(body: Body, busy: Busy) -> Tracked {
        Tracked { body, _busy: busy }
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
