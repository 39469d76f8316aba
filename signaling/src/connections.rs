//! A cap on the connections held at once: each accepted TCP stream holds a permit for as long as
//! it is open (through TLS, HTTP and a `/ws` upgrade alike); a stream that arrives when none is
//! left is closed at once, before the TLS handshake costs anything.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum_server::accept::Accept;
use futures_util::future::{BoxFuture, FutureExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Wraps an acceptor so that at most `max` connections are open at once.
#[derive(Clone)]
pub struct LimitAcceptor<A> {
    inner: A,
    permits: Arc<Semaphore>,
    refused: Arc<dyn Fn() + Send + Sync>,
}

impl<A> LimitAcceptor<A> {
    /// At most `max` connections through `inner`; `refused` is called for each one closed.
    pub fn new(inner: A, max: usize, refused: Arc<dyn Fn() + Send + Sync>) -> Self {
        LimitAcceptor {
            inner,
            permits: Arc::new(Semaphore::new(max)),
            refused,
        }
    }
}

/// A stream that gives its permit back when it closes.
pub struct Limited<I> {
    io: I,
    _permit: OwnedSemaphorePermit,
}

impl<I, S, A> Accept<I, S> for LimitAcceptor<A>
where
    I: Send + 'static,
    S: Send + 'static,
    A: Accept<Limited<I>, S> + Clone + Send + Sync + 'static,
    A::Future: Send,
{
    type Stream = A::Stream;
    type Service = A::Service;
    type Future = BoxFuture<'static, io::Result<(A::Stream, A::Service)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let limited = Limited {
                    io: stream,
                    _permit: permit,
                };
                self.inner.accept(limited, service).boxed()
            }
            Err(_) => {
                (self.refused)();
                drop(stream);
                async {
                    Err(io::Error::other(
                        "connection limit reached (max_connections): closed",
                    ))
                }
                .boxed()
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Limited<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Limited<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
