//! One upstream HTTP/1.1 connection, driven by the request that uses it.

use std::fmt;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Method, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::time::{Instant, Sleep};

use super::Error;
use super::codec::{self, Chunked, Decoded, Head, RequestFraming, ResponseFraming};
use crate::body::RequestBody;
use crate::headers::ForwardingFields;
use crate::upstream::{Endpoint, HeadTimeout, Io, UpstreamRequest};

/// The read buffer's first size, and what it grows by: hyper's
/// `INIT_BUFFER_SIZE`. A small response's head and body fit in one read.
const READ_CHUNK: usize = 8192;
/// The most one read asks for. Reads that fill what they were offered
/// double the next one's offer up to this, so a large body comes in
/// fewer system calls (hyper's adaptive reads, in short); a read that
/// comes back well short halves it again. Past 64 KiB a read's cost per
/// byte no longer falls much.
const READ_MAX: usize = 64 * 1024;
/// Request body bytes gathered before they are written.
const WRITE_HIGH: usize = 64 * 1024;
/// A request body piece at least this large (of a body with a known
/// length) is written from where it lies, after what the write buffer
/// holds, rather than copied into the buffer: a large upload's bytes are
/// never copied in user space. Smaller pieces are gathered, so several go
/// out in one write.
const WRITE_DIRECT: usize = 4096;
/// A write buffer grown larger than this by one request's body is let go
/// when the connection goes idle.
const WRITE_KEEP: usize = 64 * 1024;

/// An upstream HTTP/1.1 connection and its buffers, reused request after
/// request.
pub(crate) struct Conn {
    io: Box<dyn Io>,
    /// Bytes read and not yet consumed; empty between requests.
    read: BytesMut,
    /// The request head and body bytes not yet written.
    write: Vec<u8>,
    written: usize,
    /// A large body piece, written after `write` ([`WRITE_DIRECT`]); what
    /// is left of it.
    direct: Bytes,
    upload: Option<Upload>,
    /// Writing the request body failed; the upstream may still answer (and
    /// often has, before closing), but the connection is not reused.
    upload_failed: Option<Error>,
    /// Some of the request has been written, or a body frame taken: the
    /// request can no longer be handed back unsent.
    committed: bool,
    /// The response-head deadline of the request on it, reused from one
    /// request to the next (see [`HeadTimeout`]).
    timer: Pin<Box<Sleep>>,
    scratch: codec::Scratch,
    /// What the next read asks for ([`next_read_size`]).
    read_size: usize,
}

/// The request body being sent.
struct Upload {
    body: RequestBody,
    chunked: bool,
    /// Bytes a `content-length` body still owes.
    left: u64,
    /// The body's end has been put in the write buffer.
    ended: bool,
}

impl Upload {
    fn data(&mut self, data: &[u8], dst: &mut Vec<u8>) -> Result<(), Error> {
        if self.chunked {
            codec::encode_chunk(dst, data);
            return Ok(());
        }
        self.owe(data.len())?;
        dst.extend_from_slice(data);
        Ok(())
    }

    /// Counts `len` bytes of a `content-length` body as sent.
    fn owe(&mut self, len: usize) -> Result<(), Error> {
        let len = len as u64;
        if len > self.left {
            return Err(Error::BodyTooLong);
        }
        self.left -= len;
        Ok(())
    }

    fn end(&mut self, dst: &mut Vec<u8>) -> Result<(), Error> {
        self.ended = true;
        if self.chunked {
            dst.extend_from_slice(codec::LAST_CHUNK);
        } else if self.left != 0 {
            return Err(Error::BodyTooShort);
        }
        Ok(())
    }
}

impl Conn {
    pub(crate) fn new(io: Box<dyn Io>) -> Box<Self> {
        Box::new(Self {
            io,
            read: BytesMut::with_capacity(READ_CHUNK),
            write: Vec::with_capacity(1024),
            written: 0,
            direct: Bytes::new(),
            upload: None,
            upload_failed: None,
            committed: false,
            // Armed (and registered with the runtime's timer) by the first
            // exchange that has a deadline.
            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
            scratch: codec::Scratch::default(),
            read_size: READ_CHUNK,
        })
    }

    /// Whether an idle connection can carry a request: its upstream has
    /// sent nothing (no early bytes, no EOF, no error). Never blocks.
    pub(crate) fn idle_usable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.read.is_empty() && self.poll_fill(&mut cx).is_pending()
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.read.capacity() - self.read.len() < self.read_size / 8 {
            // Reclaims the buffer in place once the bytes handed on from
            // it have been dropped; a new one only while they live.
            self.read.reserve(self.read_size);
        }
        let offered = self.read.capacity() - self.read.len();
        let read = self.io.read_buf(&mut self.read);
        let n = ready!(std::pin::pin!(read).poll(cx))?;
        self.read_size = next_read_size(self.read_size, offered, n);
        Poll::Ready(Ok(n))
    }

    /// Gathers request body frames that are ready and writes them out
    /// (with the head, the first time): `Ready(Ok)` once all of the request
    /// is written and flushed.
    fn poll_upload(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            let mut body_pending = false;
            while let Some(up) = self.upload.as_mut().filter(|u| !u.ended) {
                if self.write.len() - self.written >= WRITE_HIGH || !self.direct.is_empty() {
                    break;
                }
                match Pin::new(&mut up.body).poll_frame(cx) {
                    Poll::Pending => {
                        body_pending = true;
                        break;
                    }
                    Poll::Ready(None) => up.end(&mut self.write)?,
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(Error::Body(e))),
                    Poll::Ready(Some(Ok(frame))) => {
                        self.committed = true;
                        // Trailers are dropped, as hyper's client drops
                        // undeclared ones (declared ones go to hyper).
                        if let Ok(data) = frame.into_data() {
                            if !up.chunked && data.len() >= WRITE_DIRECT {
                                // Nothing is added to `write` after it: a
                                // length-framed body's end adds no bytes.
                                up.owe(data.len())?;
                                self.direct = data;
                            } else {
                                up.data(&data, &mut self.write)?;
                            }
                        }
                        if up.body.is_end_stream() {
                            up.end(&mut self.write)?;
                        }
                    }
                }
            }
            while self.written < self.write.len() || !self.direct.is_empty() {
                let buffered = &self.write[self.written..];
                let io = Pin::new(&mut self.io);
                let n = ready!(if self.direct.is_empty() {
                    io.poll_write(cx, buffered)
                } else if buffered.is_empty() {
                    io.poll_write(cx, &self.direct)
                } else {
                    let both = [IoSlice::new(buffered), IoSlice::new(&self.direct)];
                    io.poll_write_vectored(cx, &both)
                })
                .map_err(Error::Io)?;
                if n == 0 {
                    return Poll::Ready(Err(Error::Io(std::io::ErrorKind::WriteZero.into())));
                }
                let from_buffer = n.min(buffered.len());
                self.written += from_buffer;
                self.direct.advance(n - from_buffer);
                self.committed = true;
            }
            self.write.clear();
            self.written = 0;
            let ended = self.upload.as_ref().is_none_or(|u| u.ended);
            if body_pending || ended {
                // TLS holds written bytes until flushed.
                ready!(Pin::new(&mut self.io).poll_flush(cx)).map_err(Error::Io)?;
                return if ended {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                };
            }
        }
    }

    /// Whether all of the request went out.
    fn upload_complete(&self) -> bool {
        self.upload_failed.is_none()
            && self.upload.as_ref().is_none_or(|u| u.ended)
            && self.written == self.write.len()
            && self.direct.is_empty()
    }

    /// Sends the request on and reads until the response head is in.
    /// `headers`: the request's, taken to hold the response's once the
    /// request cannot be handed back any more.
    fn poll_head(
        &mut self,
        head_request: bool,
        headers: &mut Option<HeaderMap>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Head, Error>> {
        loop {
            if self.upload_failed.is_none()
                && let Poll::Ready(Err(e)) = self.poll_upload(cx)
            {
                match e {
                    // The upstream may have answered and closed (a 413
                    // before the body was read): read its answer first.
                    Error::Io(_) => self.upload_failed = Some(e),
                    e => return Poll::Ready(Err(e)),
                }
            }
            if self.committed && self.scratch.headers.is_none() {
                self.scratch.headers = headers.take();
            }
            if !self.read.is_empty()
                && let Some(head) =
                    codec::parse_head_with(&mut self.read, head_request, &mut self.scratch)?
            {
                return Poll::Ready(Ok(head));
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) => {
                    return Poll::Ready(Err(self
                        .upload_failed
                        .take()
                        .unwrap_or(Error::ClosedBeforeHead)));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(Error::Io(e))),
            }
        }
    }

    /// Ready for the idle queue: drops what the last request left.
    fn settle(&mut self) {
        self.upload = None;
        // The next response starts small again; a buffer a large body grew
        // is not kept for an idle connection.
        self.read_size = READ_CHUNK;
        if self.read.capacity() > READ_MAX {
            self.read = BytesMut::with_capacity(READ_CHUNK);
        }
        self.write.clear();
        if self.write.capacity() > WRITE_KEEP {
            self.write = Vec::with_capacity(1024);
        }
        self.written = 0;
        self.direct = Bytes::new();
    }
}

/// The next read's offer after one that was offered `offered` bytes and
/// got `got`, when the current offer is `size`.
fn next_read_size(size: usize, offered: usize, got: usize) -> usize {
    if got >= offered && got > 0 {
        (size * 2).min(READ_MAX)
    } else if got < size / 4 {
        (size / 2).max(READ_CHUNK)
    } else {
        size
    }
}

/// A response head and the connection its body is to be read from.
pub(crate) struct Exchanged {
    pub head: Head,
    pub conn: Box<Conn>,
}

/// A failed exchange: the error, and the request when none of it was sent
/// (boxed, as in [`crate::upstream::SendError`]).
pub(crate) type Failed = (Error, Option<UpstreamRequest>);

/// Sends `req` on `conn` framed as `framing` ([`codec::plan`]) and reads
/// the response head, by `deadline` if any. The request stays in its box:
/// an unsent one goes back in it.
pub(crate) async fn exchange(
    mut conn: Box<Conn>,
    mut req: UpstreamRequest,
    fields: Option<&ForwardingFields<'_>>,
    framing: RequestFraming,
    deadline: Option<Instant>,
) -> Result<Result<Exchanged, Failed>, HeadTimeout> {
    codec::encode_head(
        &mut conn.write,
        req.method(),
        req.uri(),
        req.headers(),
        fields,
        framing,
    );
    let body = std::mem::replace(req.body_mut(), RequestBody::empty());
    conn.written = 0;
    conn.committed = false;
    conn.upload_failed = None;
    let (chunked, left) = match framing {
        RequestFraming::Empty => (false, 0),
        RequestFraming::Length { len, .. } => (false, len),
        RequestFraming::Chunked => (true, 0),
    };
    conn.upload = Some(Upload {
        body,
        chunked,
        left,
        ended: framing == RequestFraming::Empty,
    });
    let head_request = req.method() == Method::HEAD;
    if let Some(at) = deadline {
        conn.timer.as_mut().reset(at);
    }
    let mut headers = Some(std::mem::take(req.headers_mut()));
    let result = std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = conn.poll_head(head_request, &mut headers, cx) {
            return Poll::Ready(Ok(r));
        }
        if deadline.is_some() && conn.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(HeadTimeout));
        }
        Poll::Pending
    })
    .await?;
    Ok(match result {
        Ok(head) => Ok(Exchanged { head, conn }),
        Err(error) => {
            let mut request = None;
            if !conn.committed
                && let (Some(up), Some(headers)) = (conn.upload.take(), headers)
            {
                *req.headers_mut() = headers;
                *req.body_mut() = up.body;
                request = Some(req);
            }
            Err((error, request))
        }
    })
}

// === impl H1Body ===

/// A response body read by this client from the connection it came on.
/// At its end the connection goes back to its endpoint's idle queue, if
/// it may carry another request; dropped early, it closes the connection.
pub struct H1Body {
    conn: Option<Box<Conn>>,
    state: State,
    reusable: bool,
    endpoint: Arc<Endpoint>,
}

enum State {
    Length(u64),
    Chunked(Chunked),
    Close,
    Done,
}

impl fmt::Debug for H1Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H1Body")
            .field("open", &self.conn.is_some())
            .field("reusable", &self.reusable)
            .finish_non_exhaustive()
    }
}

impl H1Body {
    pub(crate) fn new(exchanged: Exchanged, endpoint: Arc<Endpoint>) -> (Response<()>, Self) {
        let Exchanged { head, conn } = exchanged;
        let state = match head.framing {
            ResponseFraming::Empty | ResponseFraming::Length(0) => State::Done,
            ResponseFraming::Length(n) => State::Length(n),
            ResponseFraming::Chunked => State::Chunked(Chunked::default()),
            ResponseFraming::Close => State::Close,
        };
        let mut body = Self {
            conn: Some(conn),
            state,
            reusable: head.reusable,
            endpoint,
        };
        if matches!(body.state, State::Done) {
            body.finish();
        }
        (head.response, body)
    }

    /// The body has been read to its end: the connection goes back to the
    /// idle queue if all of the request went out, the upstream did not ask
    /// to close, and it sent nothing past the body.
    fn finish(&mut self) {
        self.state = State::Done;
        if let Some(mut conn) = self.conn.take()
            && self.reusable
            && conn.upload_complete()
            && conn.read.is_empty()
        {
            conn.settle();
            self.endpoint.park_conn(conn);
        }
    }

    fn fail(&mut self, error: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.state = State::Done;
        self.conn = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            // A request body the upstream answered before reading it all
            // goes on out while the response streams; if that fails, the
            // response still may not (and the connection is not reused).
            if conn.upload_failed.is_none()
                && !conn.upload_complete()
                && let Poll::Ready(Err(e)) = conn.poll_upload(cx)
            {
                conn.upload_failed = Some(e);
            }
            match &mut this.state {
                State::Length(left) if !conn.read.is_empty() => {
                    let take = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(conn.read.len());
                    let data = conn.read.split_to(take).freeze();
                    *left -= take as u64;
                    if *left == 0 {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Chunked(decoder) => match decoder.decode(&mut conn.read) {
                    Err(e) => return this.fail(e),
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Trailers(trailers)) => {
                        this.finish();
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Decoded::End) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::More) => {}
                },
                State::Close if !conn.read.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(conn.read.split().freeze()))));
                }
                State::Done => return Poll::Ready(None),
                State::Length(_) | State::Close => {}
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if matches!(this.state, State::Close) => {
                    this.state = State::Done;
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(Error::ClosedInBody),
                Ok(_) => {}
                Err(e) => return this.fail(Error::Io(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            State::Chunked(_) | State::Close => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_that_fill_their_offer_grow_to_the_cap_and_short_ones_shrink_back() {
        let mut size = READ_CHUNK;
        for _ in 0..10 {
            size = next_read_size(size, size, size);
        }
        assert_eq!(size, READ_MAX);
        // A read that got most of its offer keeps it.
        assert_eq!(next_read_size(size, size, size / 2), size);
        for _ in 0..10 {
            size = next_read_size(size, size, 100);
        }
        assert_eq!(size, READ_CHUNK);
        // Small responses never grow it; the end of a stream neither.
        assert_eq!(next_read_size(READ_CHUNK, READ_CHUNK, 300), READ_CHUNK);
        assert_eq!(next_read_size(READ_CHUNK, 0, 0), READ_CHUNK);
    }
}
