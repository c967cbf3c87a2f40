//! The HTTP server loop: hyper's HTTP/1 connections with the limits a LAN appliance needs
//! against slow or idle clients, which `axum::serve` does not offer.
//!
//! - At most `[http] max_connections` connections are open; further ones wait in the
//!   kernel's accept queue (the device pool's descriptors are never taken by clients).
//! - Each connection goes through phases: **headers** (from its first byte, or from the
//!   accept, a request's headers must arrive within `header_timeout`), **busy** (the handler
//!   runs and its response is written: no read deadline), **idle** (between requests of a
//!   kept-alive connection, at most `idle_timeout`). A read that waits past its phase's
//!   deadline fails and hyper closes the connection. This holds for every request on a
//!   connection, not only the first.
//! - A request body must arrive within `body_timeout` of the handler's first read of it;
//!   past that the read fails with [`BodyTimeout`] (408).

use axum::Router;
use axum::body::Body;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

/// The server's limits (`[http]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A request's headers, from its first byte.
    pub header_timeout: Duration,
    /// Between requests of a kept-alive connection.
    pub idle_timeout: Duration,
    /// A request body, from the handler's first read.
    pub body_timeout: Duration,
    /// Open connections.
    pub max_connections: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Headers,
    Busy,
    Idle,
}

/// One connection's phase and the deadline of its reads.
#[derive(Debug)]
struct Phase {
    limits: Limits,
    state: Mutex<PhaseState>,
}

#[derive(Debug)]
struct PhaseState {
    stage: Stage,
    deadline: Instant,
    /// The read that waits without a deadline (busy): woken when the phase gets one, so that
    /// it arms its timer.
    waiting: Option<std::task::Waker>,
}

impl Phase {
    fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: Mutex::new(PhaseState {
                stage: Stage::Headers,
                deadline: Instant::now() + limits.header_timeout,
                waiting: None,
            }),
        }
    }

    fn set(&self, stage: Stage) {
        let deadline = Instant::now()
            + match stage {
                Stage::Headers => self.limits.header_timeout,
                Stage::Idle => self.limits.idle_timeout,
                Stage::Busy => Duration::ZERO,
            };
        let mut st = self.state.lock().expect("phase lock");
        st.stage = stage;
        st.deadline = deadline;
        if stage != Stage::Busy
            && let Some(w) = st.waiting.take()
        {
            w.wake();
        }
    }

    /// Bytes arrived: an idle connection starts a request.
    fn bytes(&self) {
        let idle = self.state.lock().expect("phase lock").stage == Stage::Idle;
        if idle {
            self.set(Stage::Headers);
        }
    }

    /// The deadline of a waiting read, if the phase has one; without one, `cx` is woken when
    /// the phase changes.
    fn deadline(&self, cx: &Context<'_>) -> Option<Instant> {
        let mut st = self.state.lock().expect("phase lock");
        if st.stage == Stage::Busy {
            st.waiting = Some(cx.waker().clone());
            return None;
        }
        Some(st.deadline)
    }
}

/// The socket with the phase's read deadline.
struct TimedIo {
    inner: TcpStream,
    phase: Arc<Phase>,
    sleep: Pin<Box<Sleep>>,
}

impl AsyncRead for TimedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.phase.bytes();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some(deadline) = self.phase.deadline(cx) else {
                    return Poll::Pending;
                };
                if self.sleep.deadline() != deadline {
                    self.sleep.as_mut().reset(deadline);
                }
                match self.sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client was too slow (header or idle timeout)",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body arrived too slowly (`[http] body_timeout`).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the request body did not arrive within the body timeout")]
pub struct BodyTimeout;

/// The request body with its deadline, armed at the handler's first read.
struct TimedBody {
    inner: Incoming,
    limit: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(f) => Poll::Ready(f.map(|r| r.map_err(Into::into))),
            Poll::Pending => {
                let limit = self.limit;
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The response body; when it ends (or is dropped), the connection turns idle.
struct Tracked {
    inner: Body,
    phase: Arc<Phase>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.phase.set(Stage::Idle);
    }
}

/// Serves `app` on `listener` until `stop` is cancelled; open connections then get
/// `grace` to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stop: CancellationToken,
    grace: Duration,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // A response written in two segments (headers, then a file) must not wait for the
        // client's delayed ACK (40 ms).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let phase = Arc::new(Phase::new(limits));
        let io = TokioIo::new(TimedIo {
            inner: tcp,
            phase: phase.clone(),
            sleep: Box::pin(tokio::time::sleep(limits.header_timeout)),
        });
        let app = app.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            phase.set(Stage::Busy);
            let (mut parts, body) = req.into_parts();
            parts.extensions.insert(ConnectInfo(peer));
            let body = Body::new(TimedBody {
                inner: body,
                limit: limits.body_timeout,
                sleep: None,
            });
            let req = axum::http::Request::from_parts(parts, body);
            let (app, phase) = (app.clone(), phase.clone());
            async move {
                use tower::ServiceExt;
                let resp = app.oneshot(req).await?;
                Ok::<_, std::convert::Infallible>(resp.map(|b| Tracked { inner: b, phase }))
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        // hyper's own header timeout would also close idle kept-alive connections after it;
        // the phases above do both jobs.
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(None::<Duration>);
        let conn = graceful.watch(builder.serve_connection(io, service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("HTTP connections still open at the end of the grace period");
    }
}
