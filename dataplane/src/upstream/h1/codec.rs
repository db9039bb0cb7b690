//! HTTP/1.1 framing for upstream requests: request heads out, response
//! heads and bodies in. Pure functions over buffers, no I/O, so every split
//! of the input can be tested.
//!
//! The bytes parsed here come from upstreams: every step is bounded in
//! memory (head, header count, chunk-size line, extensions, trailers) and
//! returns an error rather than panicking on anything it does not accept.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;

use super::Error;
use crate::headers::ForwardingFields;

/// The largest response head accepted: hyper's client reads a head into a
/// buffer of at most this (`DEFAULT_MAX_BUFFER_SIZE`, hyper 1.13
/// `proto/h1/io.rs`), and the proxy never sets another.
pub(crate) const MAX_HEAD: usize = 8192 + 4096 * 100;
/// Header fields per response head and per trailer section: hyper's
/// `DEFAULT_MAX_HEADERS` (`proto/h1/role.rs`).
pub(crate) const MAX_HEADERS: usize = 100;
/// The largest trailer section: hyper's `TRAILER_LIMIT` (`proto/h1/decode.rs`).
pub(crate) const MAX_TRAILERS: usize = 16 * 1024;
/// Chunk extensions per body, and so the longest chunk-size line: hyper's
/// `CHUNKED_EXTENSIONS_LIMIT`.
pub(crate) const MAX_CHUNK_EXTENSIONS: usize = 16 * 1024;

/// How a request body is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestFraming {
    /// No body (a GET's).
    Empty,
    /// Exactly `len` bytes; `add` when the head lacks the `content-length`
    /// that says so (the body knows its size).
    Length { len: u64, add: bool },
    /// Chunked; the head gets `transfer-encoding: chunked`.
    Chunked,
}

/// How this client frames `req`, or `None` when it leaves the request to
/// hyper's client: upgrades and CONNECT (the tunnel is hyper's), HTTP/1.0
/// requests, a `transfer-encoding` or `trailer` the proxy left (hyper
/// rewrites and filters those), an unparsable `content-length`, and a GET
/// or HEAD body of unknown length (hyper sends none).
/// The framing chosen matches what hyper's client would send.
pub(crate) fn plan<B: Body>(req: &Request<B>) -> Option<RequestFraming> {
    if req.version() != Version::HTTP_11 && req.version() != Version::HTTP_2 {
        return None;
    }
    let headers = req.headers();
    if req.method() == Method::CONNECT {
        return None;
    }
    // One pass over the names instead of four hash lookups: comparing a
    // standard name is one byte, and a request has a handful of them.
    let mut has_length = false;
    for name in headers.keys() {
        if name == header::UPGRADE || name == header::TRANSFER_ENCODING || name == header::TRAILER {
            return None;
        }
        has_length |= name == header::CONTENT_LENGTH;
    }
    let declared = if has_length {
        Some(content_length(headers).ok()??)
    } else {
        None
    };
    let body = req.body();
    if body.is_end_stream() {
        return Some(RequestFraming::Empty);
    }
    if let Some(len) = declared {
        return Some(RequestFraming::Length { len, add: false });
    }
    if let Some(len) = body.size_hint().exact() {
        return Some(RequestFraming::Length { len, add: true });
    }
    match *req.method() {
        Method::GET | Method::HEAD => None,
        _ => Some(RequestFraming::Chunked),
    }
}

/// Writes a request head into `dst` (cleared first): the request-target as
/// the proxy built it, `HTTP/1.1`, the headers as they are, the forwarding
/// `fields` not in the map, and the framing header `framing` needs.
pub(crate) fn encode_head(
    dst: &mut Vec<u8>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    fields: Option<&ForwardingFields<'_>>,
    framing: RequestFraming,
) {
    dst.clear();
    dst.extend_from_slice(method.as_str().as_bytes());
    dst.push(b' ');
    match uri.path_and_query() {
        Some(pq) if uri.authority().is_none() => dst.extend_from_slice(pq.as_str().as_bytes()),
        None if uri.authority().is_none() => dst.push(b'/'),
        _ => dst.extend_from_slice(uri.to_string().as_bytes()),
    }
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    if let Some(fields) = fields {
        fields.write_h1(dst);
    }
    match framing {
        RequestFraming::Empty | RequestFraming::Length { add: false, .. } => {}
        RequestFraming::Length { len, add: true } => {
            dst.extend_from_slice(b"content-length: ");
            dst.extend_from_slice(itoa(len, &mut [0; 20]));
            dst.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => dst.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    dst.extend_from_slice(b"\r\n");
}

/// Appends one chunk of a chunked body.
pub(crate) fn encode_chunk(dst: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        // A zero-size chunk would end the body.
        return;
    }
    let mut hex = [0u8; 16];
    let mut n = data.len();
    let mut i = hex.len();
    loop {
        i -= 1;
        hex[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    dst.extend_from_slice(&hex[i..]);
    dst.extend_from_slice(b"\r\n");
    dst.extend_from_slice(data);
    dst.extend_from_slice(b"\r\n");
}

/// The last chunk, with no trailers (hyper's client sends trailers only
/// when the request declares them, and such requests go to hyper).
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// How a response body is framed (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ResponseFraming {
    /// HEAD, 204, 304: nothing follows the head.
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub(crate) struct Head {
    pub response: Response<()>,
    pub framing: ResponseFraming,
    /// The connection may carry another request after this response.
    pub reusable: bool,
}

/// What parsing a head reuses from one response to the next.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// Where each field's name and value lie in the head.
    spans: Vec<[usize; 4]>,
    /// A map to fill (the request's, once sent, as hyper's client reuses
    /// it): a fresh `HeaderMap` is two allocations.
    pub headers: Option<HeaderMap>,
}

/// [`parse_head_with`] with nothing to reuse.
#[cfg(test)]
pub(crate) fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, Error> {
    parse_head_with(buf, head_request, &mut Scratch::default())
}

/// Parses a response head from the front of `buf`, skipping 1xx responses
/// (as hyper's client does) and consuming what it parsed. `Ok(None)`: more
/// bytes are needed. `head_request`: the request was a HEAD.
pub(crate) fn parse_head_with(
    buf: &mut BytesMut,
    head_request: bool,
    scratch: &mut Scratch,
) -> Result<Option<Head>, Error> {
    loop {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut rsp = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut rsp, buf, &mut slots)
        {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(Error::HeadTooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(Error::TooManyHeaders),
            Err(e) => return Err(Error::Parse(e)),
        };
        if len > MAX_HEAD {
            return Err(Error::HeadTooLarge);
        }
        // Complete: httparse has set code, version and reason.
        let code = rsp.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|_| Error::Status)?;
        match code {
            // This client sends no upgrades (those go to hyper's).
            101 => return Err(Error::UnexpectedUpgrade),
            100..=199 => {
                buf.advance(len);
                continue;
            }
            _ => {}
        }
        let version = if rsp.version == Some(1) {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        };
        let reason = rsp.reason.unwrap_or("");
        // Kept as hyper's client keeps it: only when not the canonical one,
        // and the proxy's server writes it back out.
        let reason = (Some(reason) != status.canonical_reason() && !reason.is_empty())
            .then(|| hyper::ext::ReasonPhrase::try_from(reason.as_bytes()).ok())
            .flatten();
        let count = rsp.headers.len();
        // Offsets, so the head can be frozen and values shared from it.
        let base = buf.as_ptr() as usize;
        let spans = &mut scratch.spans;
        spans.clear();
        spans.extend(rsp.headers.iter().map(|h| {
            let name = h.name.as_ptr() as usize - base;
            let value = h.value.as_ptr() as usize - base;
            [name, name + h.name.len(), value, value + h.value.len()]
        }));
        let head = buf.split_to(len).freeze();
        let mut headers = scratch.headers.take().unwrap_or_default();
        headers.clear();
        headers.reserve(count);
        for &[n0, n1, v0, v1] in spans.iter() {
            let name = HeaderName::from_bytes(&head[n0..n1]).map_err(|_| Error::HeaderName)?;
            let value = HeaderValue::from_maybe_shared(head.slice(v0..v1))
                .map_err(|_| Error::HeaderValue)?;
            headers.append(name, value);
        }
        let mut reusable =
            version == Version::HTTP_11 && !has_token(&headers, header::CONNECTION, "close");
        let framing = if head_request || code == 204 || code == 304 {
            ResponseFraming::Empty
        } else if headers.contains_key(header::TRANSFER_ENCODING) {
            if version == Version::HTTP_10 {
                return Err(Error::TransferEncoding);
            }
            // Transfer-Encoding wins; a message with both may be a
            // smuggling attempt: never reuse its connection.
            if headers.remove(header::CONTENT_LENGTH).is_some() {
                reusable = false;
            }
            if te_is_chunked(&headers) {
                ResponseFraming::Chunked
            } else {
                ResponseFraming::Close
            }
        } else if headers.contains_key(header::CONTENT_LENGTH) {
            ResponseFraming::Length(content_length(&headers)?.ok_or(Error::ContentLength)?)
        } else {
            ResponseFraming::Close
        };
        if framing == ResponseFraming::Close {
            reusable = false;
        }
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = headers;
        if let Some(reason) = reason {
            response.extensions_mut().insert(reason);
        }
        return Ok(Some(Head {
            response,
            framing,
            reusable,
        }));
    }
}

/// The one value every `content-length` field (and comma-separated list
/// element) agrees on: `Ok(None)` without any, an error when they are
/// invalid or differ.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Error> {
    let mut found = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err(Error::ContentLength);
            }
            let n = part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
            match found {
                Some(prev) if prev != n => return Err(Error::ContentLength),
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

/// Whether the last transfer coding is `chunked`.
fn te_is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|v| v.as_bytes().rsplit(|&b| b == b',').next())
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// What one step of decoding a chunked body gave.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body ended (with no trailers, or after them).
    End,
    /// More bytes are needed.
    More,
}

/// Decodes a chunked body incrementally from the front of a buffer.
#[derive(Debug, Default)]
pub(crate) struct Chunked {
    state: ChunkState,
    /// Extension bytes seen so far in this body, bounded.
    extensions: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

impl Chunked {
    /// One step: consumes what it decodes from `buf`; data is split off
    /// without copying.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Error> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let window = &buf[..buf.len().min(MAX_CHUNK_EXTENSIONS + 32)];
                    let Some(eol) = window.iter().position(|&b| b == b'\n') else {
                        if window.len() > MAX_CHUNK_EXTENSIONS + 31 {
                            return Err(Error::Chunk("chunk-size line too long"));
                        }
                        return Ok(Decoded::More);
                    };
                    let line = window[..eol].strip_suffix(b"\r").unwrap_or(&window[..eol]);
                    let (size, ext) = chunk_size(line)?;
                    self.extensions += ext;
                    if self.extensions > MAX_CHUNK_EXTENSIONS {
                        return Err(Error::Chunk("chunk extensions too long"));
                    }
                    buf.advance(eol + 1);
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                ChunkState::DataEnd => match eol(buf)? {
                    Some(n) => {
                        buf.advance(n);
                        self.state = ChunkState::Size;
                    }
                    None => return Ok(Decoded::More),
                },
                ChunkState::Trailers => {
                    if let Some(n) = eol(buf).ok().flatten() {
                        buf.advance(n);
                        self.state = ChunkState::Done;
                        return Ok(Decoded::End);
                    }
                    if buf.first().is_none_or(|&b| b == b'\r') && buf.len() < 2 {
                        return Ok(Decoded::More);
                    }
                    return self.trailers(buf);
                }
                ChunkState::Done => return Ok(Decoded::End),
            }
        }
    }

    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Decoded, Error> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let (len, fields) = match httparse::parse_headers(buf, &mut slots) {
            Ok(httparse::Status::Complete(done)) => done,
            Ok(httparse::Status::Partial) if buf.len() > MAX_TRAILERS => {
                return Err(Error::Chunk("trailer section too large"));
            }
            Ok(httparse::Status::Partial) => return Ok(Decoded::More),
            Err(httparse::Error::TooManyHeaders) => return Err(Error::TooManyHeaders),
            Err(e) => return Err(Error::Parse(e)),
        };
        if len > MAX_TRAILERS {
            return Err(Error::Chunk("trailer section too large"));
        }
        let mut trailers = HeaderMap::with_capacity(fields.len());
        for f in fields {
            let name = HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| Error::HeaderName)?;
            let value = HeaderValue::from_bytes(f.value).map_err(|_| Error::HeaderValue)?;
            trailers.append(name, value);
        }
        buf.advance(len);
        self.state = ChunkState::Done;
        Ok(Decoded::Trailers(trailers))
    }
}

/// A line end at the front of `buf`: its length, `None` if it may yet come.
fn eol(buf: &[u8]) -> Result<Option<usize>, Error> {
    match buf {
        [b'\r', b'\n', ..] => Ok(Some(2)),
        [b'\n', ..] => Ok(Some(1)),
        [] | [b'\r'] => Ok(None),
        _ => Err(Error::Chunk("missing line end after chunk data")),
    }
}

/// A chunk-size line without its line end: the size, and how many bytes of
/// extensions follow it.
fn chunk_size(line: &[u8]) -> Result<(u64, usize), Error> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(Error::Chunk("invalid chunk size"));
    }
    let mut size: u64 = 0;
    for &d in &line[..digits] {
        let v = (d as char).to_digit(16).unwrap_or(0);
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(v)))
            .ok_or(Error::Chunk("chunk size overflows"))?;
    }
    let rest = &line[digits..];
    let rest = rest.trim_ascii_start();
    match rest.first() {
        None => Ok((size, 0)),
        Some(b';')
            if rest
                .iter()
                .all(|&b| b == b'\t' || (b' '..0x7f).contains(&b) || b >= 0x80) =>
        {
            Ok((size, rest.len()))
        }
        _ => Err(Error::Chunk("invalid chunk-size line")),
    }
}

#[cfg(test)]
mod tests;
