//! The HTTP/2 upstream client, over the `h2` crate directly.
//!
//! hyper's HTTP/2 client hands every request to a dispatch task through a
//! channel, answers through a oneshot, and spawns two tasks per request (one
//! awaiting the response head, one piping the request body): about a tenth
//! of a unary gRPC call's instructions. Here the request's own task sends
//! the head, pipes the request body and awaits the response head, all in
//! one future ([`Exchange`]). Only a request body still streaming when the
//! response head arrives (client or bidirectional streaming) gets a task of
//! its own: nothing else could promise to keep it flowing, since the
//! response body is polled only when the client has room for it.
//!
//! The connection itself runs in a task (h2's `Connection` must be polled
//! for anything to move), one per upstream connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::client::{Connection, ResponseFuture, SendRequest};
use h2::{Reason, RecvStream, SendStream};
use http::header::{
    CONNECTION, CONTENT_LENGTH, HeaderName, HeaderValue, TE, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;
use tracing::debug;

use crate::body::{BodyError, RequestBody};
use crate::upstream::Io;

/// The settings hyper's `client::conn::http2::Builder` gives by default
/// (hyper 1, `proto::h2::client`), so upstreams see the same peer as before.
/// Windows far above the spec's 64 KiB: a bulk response is not held to one
/// round trip per 64 KiB.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONN_WINDOW: u32 = 5 * 1024 * 1024;
const MAX_FRAME_SIZE: u32 = 16 * 1024;
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 1024 * 1024;
/// Streams opened before the peer's SETTINGS say how many it takes: the
/// minimum RFC 9113 recommends peers allow.
const INITIAL_MAX_SEND_STREAMS: usize = 100;
/// Streams the peer may make us reset for its errors before the connection
/// is given up (h2's guard against a misbehaving peer).
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// Headers that are connection-specific in HTTP/1.1 and that h2 refuses to
/// send (RFC 9113 section 8.2.2); `te` is allowed only as `trailers`.
static CONNECTION_HEADERS: [HeaderName; 5] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    TRANSFER_ENCODING,
    UPGRADE,
    CONNECTION,
];

/// Why an HTTP/2 exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum H2Error {
    /// The connection, or the stream, failed (a reset, a GOAWAY, a
    /// protocol error).
    #[error(transparent)]
    Protocol(#[from] h2::Error),
    /// The client's request body failed (too large, too slow, cut off): not
    /// the upstream's doing.
    #[error("request body: {0}")]
    RequestBody(#[source] BodyError),
}

/// A failed [`send`]: the error, and the request when none of it was sent.
pub(crate) struct Failed {
    pub error: H2Error,
    pub request: Option<Request<RequestBody>>,
}

// === impl H2Conn ===

/// One multiplexed upstream connection: a handle to open streams on, and
/// whether it has ended.
pub(crate) struct H2Conn {
    tx: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
    /// Dropped with the handle: wakes the connection task so it closes once
    /// its streams are done (h2 does not wake a parked connection when its
    /// last `SendRequest` goes).
    _handle: oneshot::Sender<()>,
}

impl H2Conn {
    /// Shakes hands over `io` and starts the connection's task.
    pub(crate) async fn handshake(
        io: Box<dyn Io>,
        addr: std::net::SocketAddr,
    ) -> Result<Self, h2::Error> {
        let (tx, conn) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONN_WINDOW)
            .max_frame_size(MAX_FRAME_SIZE)
            .max_header_list_size(MAX_HEADER_LIST_SIZE)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .initial_max_send_streams(INITIAL_MAX_SEND_STREAMS)
            .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
            .enable_push(false)
            .handshake::<_, Bytes>(io)
            .await?;
        let closed = Arc::new(AtomicBool::new(false));
        let (handle, dropped) = oneshot::channel();
        tokio::spawn(run(conn, dropped, Arc::clone(&closed), addr));
        Ok(Self {
            tx,
            closed,
            _handle: handle,
        })
    }

    /// Whether no new stream can go on it: it ended, or it failed one.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

/// Polls the connection until it ends; marks it closed then.
async fn run(
    mut conn: Connection<Box<dyn Io>, Bytes>,
    mut dropped: oneshot::Receiver<()>,
    closed: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
) {
    let mut handle_gone = false;
    let result = std::future::poll_fn(|cx| {
        if !handle_gone && Pin::new(&mut dropped).poll(cx).is_ready() {
            // Polled once more below: with no handle and no stream left, h2
            // closes the connection.
            handle_gone = true;
        }
        Pin::new(&mut conn).poll(cx)
    })
    .await;
    closed.store(true, Ordering::Relaxed);
    if let Err(e) = result {
        debug!(upstream.addr = %addr, error = %e, "upstream h2 connection ended");
    }
}

// === send ===

/// Sends `req` on `conn` and awaits the response head, piping the request
/// body meanwhile. A request comes back in the error only when none of it
/// went out (the connection could take no new stream); `conn` is then
/// marked closed.
pub(crate) async fn send(
    conn: &H2Conn,
    req: Request<RequestBody>,
) -> Result<Response<H2Body>, Failed> {
    let mut tx = conn.tx.clone();
    // A fresh clone has no stream of its own pending: this only says
    // whether the connection still takes streams (no error, no GOAWAY).
    if let Err(e) = std::future::poll_fn(|cx| tx.poll_ready(cx)).await {
        conn.close();
        return Err(Failed {
            error: e.into(),
            request: Some(req),
        });
    }
    let (mut parts, body) = req.into_parts();
    strip_connection_headers(&mut parts.headers);
    if let Some(len) = body.size_hint().exact()
        && (len != 0 || has_payload_semantics(&parts.method))
        && !parts.headers.contains_key(CONTENT_LENGTH)
    {
        parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    let eos = body.is_end_stream();
    let (response, stream) = match tx.send_request(Request::from_parts(parts, ()), eos) {
        Ok(sent) => sent,
        Err(e) => {
            if is_connection_error(&e) {
                conn.close();
            }
            return Err(Failed {
                error: e.into(),
                request: None,
            });
        }
    };
    let pipe = (!eos).then(|| Pipe::new(body, stream));
    let (rsp, pipe) = Exchange { response, pipe }.await.map_err(|error| {
        if let H2Error::Protocol(e) = &error
            && is_connection_error(e)
        {
            conn.close();
        }
        Failed {
            error,
            request: None,
        }
    })?;
    if let Some(pipe) = pipe {
        // The request body streams on after the head: a task of its own
        // keeps it flowing whether or not anyone reads the response.
        tokio::spawn(Box::pin(pipe.finish()));
    }
    let content_length = rsp
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    Ok(rsp.map(|recv| H2Body {
        recv,
        data_done: false,
        remaining: content_length,
    }))
}

/// An error of the whole connection, after which it takes no new stream.
fn is_connection_error(e: &h2::Error) -> bool {
    e.is_go_away() || e.is_io()
}

/// Drops what hyper's HTTP/2 client drops before sending (hyper 1,
/// `proto::h2::strip_connection_headers`): h2 refuses to send them. The
/// proxy has already removed hop-by-hop headers; this is the last guard.
fn strip_connection_headers(headers: &mut HeaderMap) {
    if let Some(te) = headers.get(TE)
        && te != "trailers"
    {
        headers.remove(TE);
    }
    for name in &CONNECTION_HEADERS {
        if let Some(value) = headers.remove(name)
            && *name == CONNECTION
            && let Ok(listed) = value.to_str()
        {
            for listed in listed.split(',') {
                headers.remove(listed.trim());
            }
        }
    }
}

/// Methods whose empty body still says "zero bytes" with a `content-length`
/// (as hyper decides it).
fn has_payload_semantics(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::CONNECT
    )
}

/// Pipes the request body while awaiting the response head, in the
/// request's task.
struct Exchange {
    response: ResponseFuture,
    pipe: Option<Pipe>,
}

impl Future for Exchange {
    type Output = Result<(Response<RecvStream>, Option<Pipe>), H2Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(pipe) = this.pipe.as_mut() {
            match pipe.poll_send(cx) {
                Poll::Pending => {}
                Poll::Ready(Ok(())) => this.pipe = None,
                Poll::Ready(Err(PipeError::Body(e))) => {
                    return Poll::Ready(Err(H2Error::RequestBody(e)));
                }
                // The stream went wrong on the way up (a reset: perhaps an
                // early answer, RFC 9113 section 8.1): the response future
                // says how it ends.
                Poll::Ready(Err(PipeError::Stream(e))) => {
                    debug!(error = %e, "request body to upstream stopped");
                    this.pipe = None;
                }
            }
        }
        let rsp = ready!(Pin::new(&mut this.response).poll(cx))?;
        Poll::Ready(Ok((rsp, this.pipe.take())))
    }
}

// === impl Pipe ===

enum PipeError {
    Body(BodyError),
    Stream(h2::Error),
}

/// The request body on its way up one stream, with flow control.
///
/// Each piece read from the body is handed to h2 at once, window or not
/// (h2 holds what the window does not cover, and sends it as the window
/// opens); the next piece is read only once the stream has room again. So
/// at most one piece per stream waits beyond the window, and a body that
/// arrives in one piece (a unary call) goes out in the poll that sent the
/// head: waiting for the stream's first window first would cost the
/// request's task a wake-up of its own.
struct Pipe {
    body: RequestBody,
    tx: SendStream<Bytes>,
    /// A piece went beyond the window: wait for room before the next.
    full: bool,
}

impl Pipe {
    fn new(body: RequestBody, tx: SendStream<Bytes>) -> Self {
        Self {
            body,
            tx,
            full: false,
        }
    }

    /// Sends the rest of the body, then ends; a body error resets the
    /// stream.
    async fn finish(mut self) {
        match std::future::poll_fn(|cx| self.poll_send(cx)).await {
            Ok(()) => {}
            Err(PipeError::Body(e)) => debug!(error = %e, "client request body failed"),
            Err(PipeError::Stream(e)) => debug!(error = %e, "request body to upstream stopped"),
        }
    }

    /// Moves the body on until it has all gone (`Ok`), or fails.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), PipeError>> {
        loop {
            if let Poll::Ready(reason) = self.tx.poll_reset(cx) {
                let e = match reason {
                    Ok(reason) => h2::Error::from(reason),
                    Err(e) => e,
                };
                return Poll::Ready(Err(PipeError::Stream(e)));
            }
            while self.full && self.tx.capacity() == 0 {
                match ready!(self.tx.poll_capacity(cx)) {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Poll::Ready(Err(PipeError::Stream(e))),
                    None => return Poll::Ready(Err(PipeError::Stream(Reason::CANCEL.into()))),
                }
            }
            self.full = false;
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let eos = self.body.is_end_stream();
                        let sent = data.len();
                        self.tx.send_data(data, eos).map_err(PipeError::Stream)?;
                        if eos {
                            return Poll::Ready(Ok(()));
                        }
                        if sent > 0 {
                            // Room for one more byte beyond what h2 holds.
                            self.tx.reserve_capacity(1);
                            self.full = true;
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.tx.reserve_capacity(0);
                            self.tx.send_trailers(trailers).map_err(PipeError::Stream)?;
                            return Poll::Ready(Ok(()));
                        }
                    }
                },
                Some(Err(e)) => {
                    self.tx.send_reset(reset_reason(&e));
                    return Poll::Ready(Err(PipeError::Body(e)));
                }
                None => {
                    self.tx
                        .send_data(Bytes::new(), true)
                        .map_err(PipeError::Stream)?;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

/// The reset a failed request body sends upstream: the client's own reset
/// passed on (a client that went away cancels), else `INTERNAL_ERROR`, as
/// hyper's client chose.
fn reset_reason(e: &BodyError) -> Reason {
    crate::body::find_source::<h2::Error>(e)
        .and_then(h2::Error::reason)
        .unwrap_or(Reason::INTERNAL_ERROR)
}

// === impl H2Body ===

/// An HTTP/2 upstream's response body: its data, then its trailers.
#[derive(Debug)]
pub struct H2Body {
    recv: RecvStream,
    data_done: bool,
    /// What `content-length` said is left, for the size hint.
    remaining: Option<u64>,
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Handed on: the upstream may send as much again. The
                    // client side's own window holds back a slow reader.
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    if let Some(r) = this.remaining.as_mut() {
                        *r = r.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(early_end(e)),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(trailers) => Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t)))),
            Err(e) => Poll::Ready(early_end(e)),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.remaining
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

/// A reset with `NO_ERROR` ends the body without failing it: the upstream
/// answered early and wants no more of the request (RFC 9113 section 8.1),
/// as hyper reads it.
fn early_end(e: h2::Error) -> Option<Result<Frame<Bytes>, h2::Error>> {
    (e.reason() != Some(Reason::NO_ERROR)).then_some(Err(e))
}
