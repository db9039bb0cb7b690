//! The gRPC-Web wire format, as a streaming translation to and from gRPC.
//!
//! Browsers cannot read HTTP trailers, so gRPC-Web carries them as a last
//! length-prefixed frame flagged `0x80`, and its text variant base64-encodes
//! the whole body. Everything here works frame by frame, never holding a
//! stream: a server-streaming call must reach the browser message by message.
//!
//! References: `PROTOCOL-WEB.md` in grpc/grpc, and the behaviour of the
//! clients people use (connect-es, protobuf-ts, grpc-web).

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderValue};
use http_body::Frame;

use crate::grpc::{Code, GRPC_MESSAGE, GRPC_STATUS, encode_message, strip_prefix_ignore_case};

/// Flag of the frame that carries trailers.
const TRAILER_FLAG: u8 = 0x80;
/// A gRPC message frame header: flag byte and 32-bit big-endian length.
const FRAME_HEADER_LEN: usize = 5;

/// Decodes base64 in chunks: padding may end any 4-character quantum, so
/// bodies made of concatenated padded chunks decode.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A gRPC-Web request's content type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebContentType {
    /// `application/grpc-web-text`: the body is base64.
    pub text: bool,
    /// `proto` in `application/grpc-web+proto`, as written.
    pub subtype: Option<String>,
}

impl WebContentType {
    /// `application/grpc-web[-text][+subtype]`, any case, parameters ignored.
    pub fn parse(value: &HeaderValue) -> Option<Self> {
        let s = value.to_str().ok()?;
        let essence = s.split(';').next().unwrap_or("").trim();
        let rest = strip_prefix_ignore_case(essence, "application/grpc-web")?;
        let (text, rest) = match strip_prefix_ignore_case(rest, "-text") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let subtype = match rest {
            "" => None,
            r => {
                let sub = r.strip_prefix('+')?;
                if sub.is_empty() || !sub.bytes().all(is_token_byte) {
                    return None;
                }
                Some(sub.to_owned())
            }
        };
        Some(Self { text, subtype })
    }

    /// The content type toward the gRPC upstream.
    pub fn upstream(&self) -> HeaderValue {
        self.with_base("application/grpc")
    }

    /// The response content type: the request's subtype, text or binary as
    /// negotiated.
    pub fn response(&self, text: bool) -> HeaderValue {
        self.with_base(if text {
            "application/grpc-web-text"
        } else {
            "application/grpc-web"
        })
    }

    fn with_base(&self, base: &'static str) -> HeaderValue {
        match &self.subtype {
            None => HeaderValue::from_static(base),
            // The subtype was checked to be a token, so this is valid.
            Some(sub) => HeaderValue::from_str(&format!("{base}+{sub}"))
                .unwrap_or_else(|_| HeaderValue::from_static(base)),
        }
    }

    /// Whether to answer in text: when `Accept` asks for it, or when the
    /// request was text and `Accept` is absent or `*/*`.
    pub fn respond_in_text(&self, accept: Option<&HeaderValue>) -> bool {
        let accept = accept.and_then(|v| v.to_str().ok()).map(str::trim);
        match accept {
            None | Some("") | Some("*/*") => self.text,
            Some(a) => a.split(',').any(|item| {
                let essence = item.split(';').next().unwrap_or("").trim();
                strip_prefix_ignore_case(essence, "application/grpc-web-text")
                    .is_some_and(|r| r.is_empty() || r.starts_with('+'))
            }),
        }
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Why a gRPC-Web request body could not be translated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebBodyError {
    #[error("the request body is not valid base64")]
    InvalidBase64,
    #[error("a {len}-byte message exceeds the {max}-byte limit")]
    MessageTooLarge { len: u64, max: u64 },
}

impl WebBodyError {
    pub fn code(&self) -> Code {
        match self {
            WebBodyError::InvalidBase64 => Code::InvalidArgument,
            WebBodyError::MessageTooLarge { .. } => Code::ResourceExhausted,
        }
    }
}

/// Streaming base64 decoder for `application/grpc-web-text` bodies.
#[derive(Debug, Default)]
pub struct TextDecoder {
    /// Characters of an incomplete quantum, carried to the next chunk.
    pending: Vec<u8>,
}

impl TextDecoder {
    /// Decodes every complete quantum of what arrived so far.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Bytes, WebBodyError> {
        let mut input = std::mem::take(&mut self.pending);
        input.extend_from_slice(chunk);
        let whole = input.len() / 4 * 4;
        let out = decode_quanta(&input[..whole])?;
        self.pending = input[whole..].to_vec();
        Ok(out)
    }

    /// At the end of the body: a last quantum without its padding decodes;
    /// a single stray character is an error.
    pub fn finish(&mut self) -> Result<Bytes, WebBodyError> {
        let tail = std::mem::take(&mut self.pending);
        match tail.len() {
            0 => Ok(Bytes::new()),
            1 => Err(WebBodyError::InvalidBase64),
            _ => decode_quanta(&tail),
        }
    }
}

/// Decodes whole quanta, splitting after every padded one so that padding in
/// the middle of the body is accepted.
fn decode_quanta(input: &[u8]) -> Result<Bytes, WebBodyError> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let mut start = 0;
    while start < input.len() {
        let end = match input[start..].iter().position(|&b| b == b'=') {
            // The end of the quantum holding the first `=`.
            Some(i) => ((start + i) / 4 + 1) * 4,
            None => input.len(),
        }
        .min(input.len());
        LENIENT
            .decode_vec(&input[start..end], &mut out)
            .map_err(|_| WebBodyError::InvalidBase64)?;
        start = end;
    }
    Ok(Bytes::from(out))
}

/// Follows gRPC frame headers through a byte stream, to refuse a message
/// larger than the limit as soon as its header says so, before it is
/// buffered anywhere.
#[derive(Debug)]
pub struct FrameLimit {
    max: u64,
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
    /// Message bytes still to come in the current frame.
    remaining: u64,
}

impl FrameLimit {
    pub fn new(max: u64) -> Self {
        Self {
            max,
            header: [0; FRAME_HEADER_LEN],
            header_len: 0,
            remaining: 0,
        }
    }

    pub fn check(&mut self, mut data: &[u8]) -> Result<(), WebBodyError> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (FRAME_HEADER_LEN - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
            self.header_len += n;
            data = &data[n..];
            if self.header_len == FRAME_HEADER_LEN {
                self.header_len = 0;
                let len = u64::from(u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]));
                if len > self.max {
                    return Err(WebBodyError::MessageTooLarge { len, max: self.max });
                }
                self.remaining = len;
            }
        }
        Ok(())
    }
}

/// Turns a gRPC response body into a gRPC-Web one, frame by frame: data
/// passes through (base64 per frame in text mode), trailers become the final
/// `0x80` frame.
#[derive(Debug)]
pub struct WebEncoder {
    text: bool,
    /// The trailer frame has been produced.
    done: bool,
}

impl WebEncoder {
    pub fn new(text: bool) -> Self {
        Self { text, done: false }
    }

    pub fn encode(&mut self, frame: Frame<Bytes>) -> Frame<Bytes> {
        match frame.into_data() {
            Ok(data) => Frame::data(self.wrap(data)),
            Err(frame) => match frame.into_trailers() {
                Ok(trailers) => {
                    self.done = true;
                    Frame::data(self.wrap(trailer_frame(&trailers)))
                }
                // Unknown frame kinds carry nothing a browser can use.
                Err(_) => Frame::data(Bytes::new()),
            },
        }
    }

    /// When the upstream body ended: a stream that never sent trailers broke
    /// the protocol, and the client still needs a status.
    pub fn finish(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        self.done = true;
        let mut t = HeaderMap::new();
        t.insert(GRPC_STATUS.clone(), Code::Internal.header_value());
        t.insert(
            GRPC_MESSAGE.clone(),
            encode_message("upstream ended the stream without trailers"),
        );
        Some(self.wrap(trailer_frame(&t)))
    }

    fn wrap(&self, data: Bytes) -> Bytes {
        if self.text && !data.is_empty() {
            Bytes::from(STANDARD.encode(&data))
        } else {
            data
        }
    }
}

/// The `0x80` frame: `key: value\r\n` lines, keys lower-case (HTTP/2 header
/// names already are), values as received (`-bin` values stay base64).
pub fn trailer_frame(trailers: &HeaderMap) -> Bytes {
    let len: usize = trailers
        .iter()
        .map(|(k, v)| k.as_str().len() + 2 + v.len() + 2)
        .sum();
    let mut out = BytesMut::with_capacity(FRAME_HEADER_LEN + len);
    out.put_u8(TRAILER_FLAG);
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    for (k, v) in trailers {
        out.put_slice(k.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(v.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(s: &str) -> Option<WebContentType> {
        WebContentType::parse(&HeaderValue::from_str(s).unwrap())
    }

    #[test]
    fn content_types() {
        let binary = ct("application/grpc-web").unwrap();
        assert_eq!(
            binary,
            WebContentType {
                text: false,
                subtype: None
            }
        );
        assert_eq!(binary.upstream(), "application/grpc");
        let text = ct("Application/GRPC-Web-Text+Proto; charset=utf-8").unwrap();
        assert!(text.text);
        assert_eq!(text.subtype.as_deref(), Some("Proto"));
        assert_eq!(text.upstream(), "application/grpc+Proto");
        assert_eq!(text.response(true), "application/grpc-web-text+Proto");
        assert_eq!(text.response(false), "application/grpc-web+Proto");
        assert_eq!(
            ct("application/grpc-web+json").unwrap().subtype.as_deref(),
            Some("json")
        );
        for bad in [
            "application/grpc",
            "application/grpc-webx",
            "application/grpc-web+",
            "application/grpc-web-textual",
            "text/plain",
        ] {
            assert_eq!(ct(bad), None, "{bad}");
        }
    }

    #[test]
    fn text_responses_are_negotiated() {
        let text = ct("application/grpc-web-text").unwrap();
        let binary = ct("application/grpc-web+proto").unwrap();
        let accept = |s: &str| HeaderValue::from_str(s).unwrap();
        assert!(text.respond_in_text(None));
        assert!(text.respond_in_text(Some(&accept("*/*"))));
        assert!(!text.respond_in_text(Some(&accept("application/grpc-web"))));
        assert!(!binary.respond_in_text(None));
        assert!(binary.respond_in_text(Some(&accept("application/grpc-web-text+proto"))));
        assert!(
            binary.respond_in_text(Some(&accept("text/html, application/grpc-web-text;q=0.9")))
        );
    }

    #[test]
    fn text_decodes_across_any_chunk_boundary_and_mid_body_padding() {
        let messages: [&[u8]; 3] = [b"\x00\x00\x00\x00\x01A", b"hello", b"x"];
        // What a client writing one padded base64 chunk per message sends.
        let body: String = messages.iter().map(|m| STANDARD.encode(m)).collect();
        assert!(
            body.trim_end_matches('=').contains('='),
            "padding mid-body: {body}"
        );
        let want: Vec<u8> = messages.concat();
        for split in 1..=7 {
            let mut d = TextDecoder::default();
            let mut got = Vec::new();
            for chunk in body.as_bytes().chunks(split) {
                got.extend_from_slice(&d.push(chunk).unwrap());
            }
            got.extend_from_slice(&d.finish().unwrap());
            assert_eq!(got, want, "chunks of {split}");
        }
    }

    #[test]
    fn invalid_base64_is_refused() {
        assert_eq!(
            TextDecoder::default().push(b"ab!d"),
            Err(WebBodyError::InvalidBase64)
        );
        let mut d = TextDecoder::default();
        assert_eq!(d.push(b"aGVsbG8=a").unwrap(), Bytes::from_static(b"hello"));
        assert_eq!(d.finish(), Err(WebBodyError::InvalidBase64));
        // An unpadded last quantum is accepted.
        let mut d = TextDecoder::default();
        assert_eq!(d.push(b"aGk").unwrap(), Bytes::new());
        assert_eq!(d.finish().unwrap(), Bytes::from_static(b"hi"));
    }

    #[test]
    fn frame_limit_follows_headers_across_chunks() {
        let mut frames = Vec::new();
        for len in [3u32, 10, 0] {
            frames.push(0u8);
            frames.extend_from_slice(&len.to_be_bytes());
            frames.extend(std::iter::repeat_n(7u8, len as usize));
        }
        for split in 1..=8 {
            let mut limit = FrameLimit::new(10);
            for chunk in frames.chunks(split) {
                limit.check(chunk).unwrap();
            }
            let mut tight = FrameLimit::new(9);
            let err = frames
                .chunks(split)
                .map(|c| tight.check(c))
                .find_map(Result::err);
            assert_eq!(err, Some(WebBodyError::MessageTooLarge { len: 10, max: 9 }));
        }
    }

    #[test]
    fn trailers_become_the_final_frame() {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        t.insert("x-trace-bin", HeaderValue::from_static("AAEC"));
        let mut enc = WebEncoder::new(false);
        assert_eq!(
            enc.encode(Frame::data(Bytes::from_static(b"\x00\x00\x00\x00\x00")))
                .into_data()
                .unwrap(),
            Bytes::from_static(b"\x00\x00\x00\x00\x00")
        );
        let last = enc.encode(Frame::trailers(t)).into_data().unwrap();
        let lines = b"grpc-status: 0\r\nx-trace-bin: AAEC\r\n";
        assert_eq!(last[0], 0x80);
        assert_eq!(&last[1..5], &(lines.len() as u32).to_be_bytes());
        assert_eq!(&last[5..], lines);
        assert_eq!(enc.finish(), None);
    }

    #[test]
    fn text_mode_encodes_each_frame_and_reports_missing_trailers() {
        let mut enc = WebEncoder::new(true);
        let data = enc.encode(Frame::data(Bytes::from_static(b"hello")));
        assert_eq!(data.into_data().unwrap(), Bytes::from_static(b"aGVsbG8="));
        let last = enc.finish().unwrap();
        let raw = STANDARD.decode(&last).unwrap();
        assert_eq!(raw[0], 0x80);
        let text = String::from_utf8_lossy(&raw[5..]);
        assert!(text.starts_with("grpc-status: 13\r\n"), "{text}");
    }
}
