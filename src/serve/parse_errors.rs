//! JSON bodies for the answers hyper writes by itself.
//!
//! A request hyper cannot parse never reaches the router: a request target over 65,534 bytes
//! (414), a malformed request line or header (400), headers over its buffer (431). Hyper
//! answers those with an empty body and closes, and offers no hook to change the answer. Every
//! other error carries the datarhei `{code, message, details}` body, so these should too: this
//! socket wrapper recognises hyper's automatic answer (written while no request is in flight,
//! in one write, `connection: close`, `content-length: 0`, one of those three statuses) and
//! sends the same head with a JSON body instead.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::connections::Connection;
use crate::api::error::ErrorBody;

/// The longest automatic answer: a status line and two short headers.
const MAX_AUTO_ANSWER: usize = 256;

/// A socket whose automatic parse-error answers get JSON bodies.
pub struct ErrorBodies<S> {
    inner: S,
    connection: Arc<Connection>,
    /// The JSON answer being written, how much of it is out, and the length of hyper's
    /// answer it replaces (reported as written once all of it is).
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl<S> ErrorBodies<S> {
    /// Wraps the socket of `connection`.
    pub fn new(inner: S, connection: Arc<Connection>) -> ErrorBodies<S> {
        ErrorBodies {
            inner,
            connection,
            replacing: None,
        }
    }
}

/// The JSON answer replacing `written`, when `written` is one of hyper's automatic answers.
fn replacement(written: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(written).ok()?;
    let rest = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))?;
    let (code, details) = match rest.get(..4)? {
        "400 " => (400, "the request is not valid HTTP/1.1"),
        "414 " => (414, "the request target is longer than 65,534 bytes"),
        "431 " => (431, "the request head is too large"),
        _ => return None,
    };
    const EMPTY: &str = "\r\nconnection: close\r\ncontent-length: 0\r\n";
    if !text.ends_with("\r\n\r\n") || !text.contains(EMPTY) {
        return None;
    }
    let status = axum::http::StatusCode::from_u16(code).ok()?;
    let body = serde_json::to_string(&ErrorBody {
        code,
        message: status.canonical_reason()?.to_string(),
        details: vec![details.to_string()],
    })
    .ok()?;
    let headers = format!(
        "\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    Some(format!("{}{body}", text.replacen(EMPTY, &headers, 1)).into_bytes())
}

impl<S: AsyncWrite + Unpin> ErrorBodies<S> {
    /// Checks a write that may be an automatic answer; only small writes outside a request are.
    fn inspect(&mut self, len: usize, bytes: impl FnOnce() -> Vec<u8>) {
        if len <= MAX_AUTO_ANSWER && !self.connection.is_busy() {
            if let Some(answer) = replacement(&bytes()) {
                self.replacing = Some((answer, 0, len));
            }
        }
    }

    /// Writes the replacement; ready with the length of what it replaced once all is out.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let Some((answer, sent, replaced)) = &mut self.replacing else {
            unreachable!("only called while replacing")
        };
        while *sent < answer.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &answer[*sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            *sent += n;
        }
        let replaced = *replaced;
        self.replacing = None;
        Poll::Ready(Ok(replaced))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ErrorBodies<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ErrorBodies<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.replacing.is_none() {
            this.inspect(buf.len(), || buf.to_vec());
        }
        if this.replacing.is_some() {
            return this.poll_replacement(cx);
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.replacing.is_none() {
            let len = bufs.iter().map(|b| b.len()).sum();
            this.inspect(len, || {
                bufs.iter().flat_map(|b| b.iter().copied()).collect()
            });
        }
        if this.replacing.is_some() {
            return this.poll_replacement(cx);
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "date: Wed, 02 Dec 2026 04:59:44 GMT\r\n\r\n";

    #[test]
    fn hypers_automatic_answers_get_json_bodies() {
        for (line, code) in [
            ("HTTP/1.1 414 URI Too Long", 414),
            ("HTTP/1.1 400 Bad Request", 400),
            ("HTTP/1.0 431 Request Header Fields Too Large", 431),
        ] {
            let auto = format!("{line}\r\nconnection: close\r\ncontent-length: 0\r\n{DATE}");
            let answer = String::from_utf8(replacement(auto.as_bytes()).unwrap()).unwrap();
            let (head, body) = answer.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with(line), "{head}");
            assert!(head.contains("content-type: application/json"), "{head}");
            assert!(
                head.contains(&format!("content-length: {}", body.len())),
                "{head}"
            );
            let body: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(body["code"], code);
            assert!(body["details"][0].is_string());
        }
    }

    #[test]
    fn other_writes_pass_unchanged() {
        for other in [
            format!("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n{DATE}"),
            format!("HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n{DATE}"),
            format!("HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 5\r\n{DATE}"),
            "HTTP/1.1 414 URI Too Long, says this file".to_string(),
        ] {
            assert_eq!(replacement(other.as_bytes()), None, "{other}");
        }
    }
}
