//! Streaming bodies in both directions: nothing is buffered whole.
//!
//! [`RequestBody`] carries the client's body to the upstream, enforcing the
//! rule's size limit and the send timeout (longest gap between two pieces).
//! [`ResponseBody`] carries the upstream's (or a synthetic) body to the
//! client, enforcing the read timeout, counting bytes, and running a
//! completion hook once when the body ends or is dropped (client gone), which
//! is where the access-log line and the duration metric are recorded.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::balance::InFlight;
use crate::grpc::web::{TextDecoder, WebEncoder};
use crate::grpc::{CallFailure, Code, FrameCursor, GrpcBodyError, status_trailers};
use crate::upstream::Recycle;
use crate::upstream::body::{UpstreamBody, UpstreamBodyError};

/// Why a proxied body stopped early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("no body data for {0:?}")]
    Timeout(Duration),
    /// The route's request timeout passed while the response streamed.
    #[error("request timeout passed")]
    Deadline,
    #[error(transparent)]
    Stream(#[from] hyper::Error),
    /// The upstream's response body failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamBodyError),
    #[error(transparent)]
    Grpc(#[from] GrpcBodyError),
}

/// An idle timer armed only while the inner body is pending, so bodies that
/// arrive in one piece never touch the timer wheel. Its callers may pass an
/// end that no progress moves (`until`: a route's request timeout), which
/// they keep themselves: few routes have one, and the response body keeps
/// it with its other rare parts.
struct IdleTimer {
    idle: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

/// Whether the fixed end has passed, read at a piece of body: a body that
/// never pauses never polls the timer.
fn past(until: Option<Instant>) -> bool {
    until.is_some_and(|u| Instant::now() >= u)
}

impl IdleTimer {
    fn new(idle: Duration) -> Self {
        Self {
            idle,
            sleep: None,
            armed: false,
        }
    }

    fn progress(&mut self) {
        self.armed = false;
    }

    /// Called when the inner body is pending: `Ready` means the gap, or the
    /// time to the fixed end, is over. A timeout too large to add to the
    /// clock never expires.
    fn poll_expired(&mut self, until: Option<Instant>, cx: &mut Context<'_>) -> Poll<()> {
        if !self.armed {
            let gap_end = Instant::now().checked_add(self.idle);
            let Some(deadline) = (match (gap_end, until) {
                (Some(g), Some(u)) => Some(g.min(u)),
                (g, u) => g.or(u),
            }) else {
                return Poll::Pending;
            };
            match self.sleep.as_mut() {
                Some(s) => s.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        match self.sleep.as_mut() {
            Some(s) => s.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }

    /// Why it expired.
    fn error(&self, until: Option<Instant>) -> BodyError {
        if past(until) {
            BodyError::Deadline
        } else {
            BodyError::Timeout(self.idle)
        }
    }
}

/// The client's request body on its way upstream.
pub struct RequestBody {
    inner: Option<Incoming>,
    limit: Option<u64>,
    /// Bytes read so far, for whoever counts them; `None` when nobody does.
    received: Option<Arc<AtomicU64>>,
    /// The same count, for the limit.
    total: u64,
    timer: IdleTimer,
    grpc: Option<GrpcRequest>,
    /// Request mirroring's part, on mirrored requests only.
    mirror: Option<Box<Mirrored>>,
}

/// A body's part in request mirroring.
enum Mirrored {
    /// The original's body, kept for copies as it streams.
    Tee(crate::filter::mirror::Tee),
    /// A copy's body, whole; `None` once sent.
    Copy(Option<Bytes>),
}

/// What a gRPC call's request stream goes through: messages are checked
/// against the size limit one by one (a stream as a whole is unbounded), and
/// a gRPC-Web text body is decoded from base64 as it arrives.
#[derive(Debug)]
pub struct GrpcRequest {
    cursor: FrameCursor,
    text: Option<TextDecoder>,
    failure: CallFailure,
}

impl GrpcRequest {
    pub fn new(max_message: u64, text: bool, failure: CallFailure) -> Self {
        Self {
            cursor: FrameCursor::new(max_message),
            text: text.then(TextDecoder::default),
            failure,
        }
    }

    fn data(&mut self, data: Bytes) -> Result<Bytes, GrpcBodyError> {
        let data = match self.text.as_mut() {
            Some(t) => t.push(&data)?,
            None => data,
        };
        self.cursor.advance(&data)?;
        Ok(data)
    }

    /// The last few decoded bytes of a text body, at its end.
    fn end(&mut self) -> Result<Option<Bytes>, GrpcBodyError> {
        let Some(t) = self.text.as_mut() else {
            return Ok(None);
        };
        let rest = t.finish()?;
        self.cursor.advance(&rest)?;
        Ok((!rest.is_empty()).then_some(rest))
    }
}

// === impl RequestBody ===

impl RequestBody {
    pub fn new(
        inner: Incoming,
        limit: Option<u64>,
        send_timeout: Duration,
        received: Option<Arc<AtomicU64>>,
    ) -> Self {
        Self {
            inner: Some(inner),
            limit,
            received,
            total: 0,
            timer: IdleTimer::new(send_timeout),
            grpc: None,
            mirror: None,
        }
    }

    /// Keeps a copy of the body for `tee`'s copies as it streams; they are
    /// sent at its end, or dropped if it fails or is dropped first.
    pub(crate) fn tee(mut self, tee: crate::filter::mirror::Tee) -> Self {
        // Boxed: a body without a tee stays one pointer larger only.
        self.mirror = Some(Box::new(Mirrored::Tee(tee)));
        self
    }

    /// A gRPC call's stream: per-message limits instead of a total one, and
    /// no idle timeout (a stream may stay quiet as long as the call lives).
    pub fn grpc(mut self, grpc: GrpcRequest) -> Self {
        self.limit = None;
        self.timer = IdleTimer::new(Duration::MAX);
        self.grpc = Some(grpc);
        self
    }

    fn grpc_failed(&mut self, e: GrpcBodyError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.inner = None;
        if let Some(g) = &self.grpc {
            g.failure.set(e.clone());
        }
        Poll::Ready(Some(Err(BodyError::Grpc(e))))
    }
}

impl RequestBody {
    /// No body at all: a request sent again on a retry had none.
    pub fn empty() -> Self {
        Self {
            inner: None,
            limit: None,
            received: None,
            total: 0,
            timer: IdleTimer::new(Duration::MAX),
            grpc: None,
            mirror: None,
        }
    }

    /// A mirrored copy's body, whole.
    pub(crate) fn buffered(body: Bytes) -> Self {
        let mut b = Self::empty();
        if !body.is_empty() {
            b.mirror = Some(Box::new(Mirrored::Copy(Some(body))));
        }
        b
    }

    /// Feeds the tee what the upstream is sent: a piece is kept, the end
    /// sends the copies, a failure (or a body over the tee's bound) drops
    /// them.
    fn feed_tee(&mut self, polled: &Poll<Option<Result<Frame<Bytes>, BodyError>>>) {
        let Some(Mirrored::Tee(tee)) = self.mirror.as_deref_mut() else {
            return;
        };
        let keep = match polled {
            Poll::Pending => return,
            Poll::Ready(Some(Ok(frame))) => frame.data_ref().is_none_or(|d| tee.push(d)),
            Poll::Ready(Some(Err(_))) => false,
            Poll::Ready(None) => true,
        };
        let ended = keep && (matches!(polled, Poll::Ready(None)) || self.inner_ended());
        if !keep || ended {
            let taken = self.mirror.take().map(|m| *m);
            if ended && let Some(Mirrored::Tee(tee)) = taken {
                tee.finish();
            }
        }
    }

    /// The client's body has no more to give (hyper may not poll again
    /// once it says so).
    fn inner_ended(&self) -> bool {
        match &self.inner {
            None => true,
            // A text body may still hold an undecoded last quantum.
            Some(b) => b.is_end_stream() && self.grpc.as_ref().is_none_or(|g| g.text.is_none()),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let Some(mirror) = this.mirror.as_deref_mut() else {
            return this.poll_client(cx);
        };
        if let Mirrored::Copy(body) = mirror {
            return Poll::Ready(body.take().map(|b| Ok(Frame::data(b))));
        }
        let polled = this.poll_client(cx);
        this.feed_tee(&polled);
        polled
    }

    fn is_end_stream(&self) -> bool {
        if let Some(Mirrored::Copy(body)) = self.mirror.as_deref() {
            return body.is_none();
        }
        self.inner_ended()
    }

    fn size_hint(&self) -> SizeHint {
        if let Some(Mirrored::Copy(body)) = self.mirror.as_deref() {
            return SizeHint::with_exact(body.as_ref().map_or(0, |b| b.len() as u64));
        }
        if self.grpc.as_ref().is_some_and(|g| g.text.is_some()) {
            // Decoding changes the length.
            return SizeHint::default();
        }
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl RequestBody {
    /// The client's body, under the limit and timeout.
    fn poll_client(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.timer.progress();
                if let Some(data) = frame.data_ref() {
                    this.total += data.len() as u64;
                    if let Some(received) = &this.received {
                        received.store(this.total, Ordering::Relaxed);
                    }
                    if let Some(limit) = this.limit
                        && this.total > limit
                    {
                        this.inner = None;
                        return Poll::Ready(Some(Err(BodyError::TooLarge { limit })));
                    }
                }
                if let Some(g) = this.grpc.as_mut() {
                    return match frame.into_data() {
                        Ok(data) => match g.data(data) {
                            Ok(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                            Err(e) => this.grpc_failed(e),
                        },
                        Err(frame) => Poll::Ready(Some(Ok(frame))),
                    };
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.inner = None;
                Poll::Ready(Some(Err(BodyError::Stream(e))))
            }
            Poll::Ready(None) => {
                this.inner = None;
                match this.grpc.as_mut().map(GrpcRequest::end) {
                    Some(Ok(Some(rest))) => Poll::Ready(Some(Ok(Frame::data(rest)))),
                    Some(Err(e)) => this.grpc_failed(e),
                    Some(Ok(None)) | None => Poll::Ready(None),
                }
            }
            Poll::Pending => {
                ready!(this.timer.poll_expired(None, cx));
                this.inner = None;
                Poll::Ready(Some(Err(BodyError::Timeout(this.timer.idle))))
            }
        }
    }
}

/// Runs once when a response body is finished or dropped.
pub type OnDone = Box<dyn FnOnce(Done) + Send>;

/// How a response body ended.
#[derive(Clone, Copy, Debug)]
pub struct Done {
    /// Body bytes sent.
    pub bytes: u64,
    /// A gRPC call's status, from the trailers that went to the client.
    pub grpc_status: Option<u8>,
}

enum Source {
    Upstream(UpstreamBody),
    Full(Option<Bytes>),
}

/// The body sent to the client.
pub struct ResponseBody {
    source: Source,
    timer: Option<IdleTimer>,
    sent: u64,
    on_done: Option<OnDone>,
    /// Counts the request in flight on its endpoint until the body ends.
    in_flight: Option<InFlight>,
    /// What only some answers carry, boxed: the response is moved by value
    /// from phase to phase and through hyper's dispatcher, and kept at 256
    /// bytes or less (head and body) each move copies about half as much.
    rare: Option<Box<Rare>>,
}

/// A response body's parts for features few answers use.
#[derive(Default)]
struct Rare {
    /// A route's request timeout: an end no progress moves.
    until: Option<Instant>,
    /// A gRPC call's deadline: when it passes, the body ends with
    /// `grpc-status: 4` trailers and the upstream stream is dropped.
    deadline: Option<Pin<Box<Sleep>>>,
    /// The upstream connection (hyper's client), returned to its pool when
    /// the body ends.
    recycle: Option<Box<Recycle>>,
    grpc: Option<GrpcResponse>,
    /// Places under connection limits, released when the body ends.
    held: Vec<crate::filter::rate_limit::ConnectionGuard>,
    /// A bandwidth limit (`limit-rate`): frames wait for it.
    throttle: Option<crate::filter::rate_limit::Throttle>,
}

/// A gRPC call's response: when the proxy cut the request stream, the call
/// ends with the status saying why; a gRPC-Web call's frames are encoded.
struct GrpcResponse {
    failure: CallFailure,
    web: Option<WebEncoder>,
    /// The status in the trailers that went to the client.
    status: Option<u8>,
}

// === impl ResponseBody ===

impl ResponseBody {
    /// An upstream's response: each gap in it is bounded by `read_timeout`,
    /// and the whole of it ends by `until` (a route's request timeout) if
    /// set, with an error the client sees as a cut-off body.
    pub fn upstream(
        inner: UpstreamBody,
        read_timeout: Duration,
        until: Option<Instant>,
        recycle: Option<Box<Recycle>>,
    ) -> Self {
        let mut body = Self::of(Source::Upstream(inner));
        body.timer = Some(IdleTimer::new(read_timeout));
        if until.is_some() || recycle.is_some() {
            let rare = body.rare();
            rare.until = until;
            rare.recycle = recycle;
        }
        body
    }

    /// A gRPC response: streams may stay quiet for as long as the call
    /// lives, so there is no idle timeout; the client's deadline, if it set
    /// one, ends the call.
    pub fn upstream_grpc(
        inner: UpstreamBody,
        deadline: Option<Instant>,
        recycle: Option<Box<Recycle>>,
    ) -> Self {
        let mut body = Self::of(Source::Upstream(inner));
        if deadline.is_some() || recycle.is_some() {
            let rare = body.rare();
            rare.deadline = deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
            rare.recycle = recycle;
        }
        body
    }

    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self::of(Source::Full((!bytes.is_empty()).then_some(bytes)))
    }

    fn of(source: Source) -> Self {
        Self {
            source,
            timer: None,
            sent: 0,
            on_done: None,
            in_flight: None,
            rare: None,
        }
    }

    /// The rare parts, made on first use.
    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_default()
    }

    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    /// Whether this streams an upstream's answer (rather than the proxy's
    /// own): custom error pages intercept upstream answers only when told.
    pub fn is_upstream(&self) -> bool {
        matches!(self.source, Source::Upstream(_))
    }

    /// Makes this a gRPC call's body: `failure` is shared with the request
    /// body; `web` encodes for a gRPC-Web client.
    pub fn grpc_call(mut self, failure: CallFailure, web: Option<WebEncoder>) -> Self {
        self.rare().grpc = Some(GrpcResponse {
            failure,
            web,
            status: None,
        });
        self
    }

    /// Keeps the request counted in flight on its endpoint until the body
    /// is done.
    pub fn holding(mut self, in_flight: InFlight) -> Self {
        self.in_flight = Some(in_flight);
        self
    }

    /// In place: an answer's body is not moved out of it and back for this.
    pub fn on_done(&mut self, f: OnDone) {
        self.on_done = Some(f);
    }

    /// Holds `guards` until the body ends (or is dropped).
    pub(crate) fn hold(&mut self, guards: Vec<crate::filter::rate_limit::ConnectionGuard>) {
        if !guards.is_empty() {
            self.rare().held = guards;
        }
    }

    /// Holds the body's frames to `throttle`'s rate.
    pub(crate) fn throttle(&mut self, throttle: crate::filter::rate_limit::Throttle) {
        self.rare().throttle = Some(throttle);
    }

    /// A route's request timeout, if the body has one.
    fn until(&self) -> Option<Instant> {
        self.rare.as_ref().and_then(|r| r.until)
    }

    fn grpc(&self) -> Option<&GrpcResponse> {
        self.rare.as_ref().and_then(|r| r.grpc.as_ref())
    }

    fn finish(&mut self, complete: bool) {
        self.in_flight = None;
        let mut grpc_status = None;
        if let Some(rare) = self.rare.as_mut() {
            rare.held.clear();
            if let Some(r) = rare.recycle.take()
                && complete
            {
                r.finish();
            }
            grpc_status = rare.grpc.as_ref().and_then(|g| g.status);
        }
        if let Some(f) = self.on_done.take() {
            f(Done {
                bytes: self.sent,
                grpc_status,
            });
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let complete = self.is_end_stream();
        self.finish(complete);
    }
}

/// Polls an upstream response body. On an HTTP/1.1 connection that this
/// request drives, the connection is polled first, with the task's waker;
/// the body then needs none (only the connection feeds it), and a waker of
/// its own would only wake the task from inside its own poll.
fn poll_upstream(
    inner: &mut UpstreamBody,
    recycle: Option<&mut Recycle>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, UpstreamBodyError>>> {
    if let Some(r) = recycle {
        r.drive(cx);
        if r.drives_body() {
            let mut noop = Context::from_waker(std::task::Waker::noop());
            return Pin::new(inner).poll_frame(&mut noop);
        }
    }
    Pin::new(inner).poll_frame(cx)
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Some(t) = this.rare.as_mut().and_then(|r| r.throttle.as_mut()) {
            ready!(t.poll_ready(cx));
        }
        let until = this.until();
        let recycle = this
            .rare
            .as_deref_mut()
            .and_then(|r| r.recycle.as_deref_mut());
        let polled = match &mut this.source {
            Source::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Source::Upstream(inner) => match poll_upstream(inner, recycle, cx) {
                Poll::Ready(r) => Poll::Ready(r.map(|r| r.map_err(BodyError::Upstream))),
                Poll::Pending => {
                    if let Some(rare) = this.rare.as_deref_mut()
                        && let Some(d) = rare.deadline.as_mut()
                    {
                        ready!(d.as_mut().poll(cx));
                        // Deadline passed: end the call for the client; the
                        // upstream stream is reset by dropping it, never
                        // reused.
                        rare.deadline = None;
                        rare.recycle = None;
                        this.source = Source::Full(None);
                        Poll::Ready(Some(Ok(Frame::trailers(crate::grpc::status_trailers(
                            crate::grpc::Code::DeadlineExceeded,
                            "deadline exceeded",
                        )))))
                    } else if let Some(timer) = this.timer.as_mut() {
                        ready!(timer.poll_expired(until, cx));
                        let error = timer.error(until);
                        this.source = Source::Full(None);
                        this.finish(false);
                        return Poll::Ready(Some(Err(error)));
                    } else {
                        Poll::Pending
                    }
                }
            },
        };
        let polled = match (polled, this.rare.as_deref_mut()) {
            (
                polled,
                Some(Rare {
                    grpc: Some(g),
                    recycle,
                    ..
                }),
            ) => match polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(t) = frame.trailers_ref() {
                        g.status = crate::grpc::status_of(t);
                    }
                    match g.web.as_mut() {
                        Some(web) => Poll::Ready(Some(Ok(web.encode(frame)))),
                        None => Poll::Ready(Some(Ok(frame))),
                    }
                }
                Poll::Ready(None) => match g.web.as_mut().and_then(WebEncoder::finish) {
                    Some(last) => {
                        g.status = Some(Code::Internal.as_u8());
                        Poll::Ready(Some(Ok(Frame::data(last))))
                    }
                    None => Poll::Ready(None),
                },
                Poll::Ready(Some(Err(e))) => {
                    let (code, message) = match g.failure.get() {
                        Some(f) => (f.code(), f.to_string()),
                        None => (Code::Unavailable, format!("upstream stream broke: {e}")),
                    };
                    let ended = match g.web.as_mut() {
                        Some(web) => web.fail(code, &message).map(Frame::data),
                        // Native gRPC clients see a broken stream as a status
                        // of their own, unless the proxy knows better.
                        None => g
                            .failure
                            .get()
                            .map(|_| Frame::trailers(status_trailers(code, &message))),
                    };
                    match ended {
                        Some(frame) => {
                            g.status = Some(code.as_u8());
                            *recycle = None;
                            this.source = Source::Full(None);
                            Poll::Ready(Some(Ok(frame)))
                        }
                        None => Poll::Ready(Some(Err(e))),
                    }
                }
                Poll::Pending => Poll::Pending,
            },
            (polled, _) => polled,
        };
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(t) = this.timer.as_mut() {
                    if past(until) {
                        this.source = Source::Full(None);
                        this.finish(false);
                        return Poll::Ready(Some(Err(BodyError::Deadline)));
                    }
                    t.progress();
                }
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                    if let Some(t) = this.rare.as_mut().and_then(|r| r.throttle.as_mut()) {
                        t.sent(data.len() as u64);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.finish(true);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.source = Source::Full(None);
                this.finish(false);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        let web_pending = self
            .grpc()
            .and_then(|g| g.web.as_ref())
            .is_some_and(|w| !w.is_done());
        !web_pending
            && match &self.source {
                Source::Upstream(b) => b.is_end_stream(),
                Source::Full(b) => b.is_none(),
            }
    }

    fn size_hint(&self) -> SizeHint {
        if self.grpc().is_some_and(|g| g.web.is_some()) {
            // Encoding changes the length, and trailers become body.
            return SizeHint::default();
        }
        match &self.source {
            Source::Upstream(b) => b.size_hint(),
            Source::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// Walks an error's sources looking for a [`BodyError`] (hyper wraps the
/// body error that made a request fail).
pub fn find_body_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyError> {
    find_source(err)
}

/// The first error of type `T` in `err`'s chain of sources, `err` included.
pub(crate) fn find_source<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_moves_in_at_most_256_bytes() {
        // The rare parts are boxed for this (see `ResponseBody::rare`):
        // above 256 bytes, each move of the answer copies in a loop.
        let size = std::mem::size_of::<http::Response<ResponseBody>>();
        assert!(size <= 256, "{size} bytes");
    }

    #[tokio::test]
    async fn huge_idle_timeout_never_expires_and_never_panics() {
        let mut t = IdleTimer::new(Duration::MAX);
        let polled = std::future::poll_fn(|cx| Poll::Ready(t.poll_expired(None, cx))).await;
        assert!(polled.is_pending());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timer_expires_after_the_gap() {
        let mut t = IdleTimer::new(Duration::from_secs(5));
        let first = std::future::poll_fn(|cx| Poll::Ready(t.poll_expired(None, cx))).await;
        assert!(first.is_pending());
        tokio::time::advance(Duration::from_secs(6)).await;
        let later = std::future::poll_fn(|cx| Poll::Ready(t.poll_expired(None, cx))).await;
        assert!(later.is_ready());
        assert!(matches!(t.error(None), BodyError::Timeout(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn progress_does_not_move_the_fixed_end() {
        let mut t = IdleTimer::new(Duration::from_secs(5));
        let until = Some(Instant::now() + Duration::from_secs(8));
        for _ in 0..3 {
            let polled = std::future::poll_fn(|cx| Poll::Ready(t.poll_expired(until, cx))).await;
            assert!(polled.is_pending());
            assert!(!past(until));
            tokio::time::advance(Duration::from_secs(3)).await;
            t.progress();
        }
        // 9 s in, 3 s after the last progress: only the fixed end is over.
        assert!(past(until));
        let polled = std::future::poll_fn(|cx| Poll::Ready(t.poll_expired(until, cx))).await;
        assert!(polled.is_ready());
        assert!(matches!(t.error(until), BodyError::Deadline));
    }
}
