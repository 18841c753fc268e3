//! Lingering close: read and discard what the client is still sending before closing.
//!
//! A response sent before the request body was read (a 413 for a 2 MB upload) ends the
//! connection with the rest of the body unread. Closing a socket with unread data makes the
//! kernel send a reset, which can destroy the response before the client reads it: the client
//! sees "connection reset" instead of the 413. Like nginx's `lingering_close`, the socket is
//! kept after the response (its write side already shut), draining input briefly.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::connections::Connection;

/// Longest lingering; a client still sending after it gets the reset anyway.
const MAX_LINGER: Duration = Duration::from_secs(2);
/// Most bytes read while lingering (above any body limit worth waiting for).
const MAX_DRAIN: usize = 4 << 20;

/// A connection's socket, which lingers when dropped after [`Linger::arm`].
pub struct Lingering {
    stream: Option<TcpStream>,
    armed: Arc<AtomicBool>,
    connection: Arc<Connection>,
}

/// Arms a [`Lingering`] socket once hyper ended the connection itself (not for sockets closed
/// as idle, evicted or broken: those are closed at once).
#[derive(Clone)]
pub struct Linger(Arc<AtomicBool>);

impl Linger {
    /// The socket will linger when dropped.
    pub fn arm(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Lingering {
    /// Wraps `stream`; the connection keeps its place in the table while lingering.
    pub fn new(stream: TcpStream, connection: Arc<Connection>) -> (Lingering, Linger) {
        let armed = Arc::new(AtomicBool::new(false));
        let linger = Linger(armed.clone());
        let socket = Lingering {
            stream: Some(stream),
            armed,
            connection,
        };
        (socket, linger)
    }

    fn stream(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(self.stream.as_mut().expect("present until drop"))
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            if self.armed.load(Ordering::Relaxed) {
                tokio::spawn(drain(stream, self.connection.clone()));
            }
        }
    }
}

async fn drain(mut stream: TcpStream, connection: Arc<Connection>) {
    let _ = stream.shutdown().await;
    let deadline = tokio::time::Instant::now() + MAX_LINGER;
    let mut buf = vec![0u8; 16 * 1024];
    let mut drained = 0;
    while drained < MAX_DRAIN {
        tokio::select! {
            read = tokio::time::timeout_at(deadline, stream.read(&mut buf)) => match read {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => break,
            },
            _ = connection.closed() => break,
        }
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.stream().poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.stream().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.stream().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }
}
