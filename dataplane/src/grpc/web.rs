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

use crate::grpc::{
    Code, FRAME_HEADER_LEN, FrameCursor, GrpcBodyError, status_trailers, strip_prefix_ignore_case,
};

/// Flag of the frame that carries trailers.
const TRAILER_FLAG: u8 = 0x80;

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

/// Streaming base64 decoder for `application/grpc-web-text` bodies.
#[derive(Debug, Default)]
pub struct TextDecoder {
    /// Characters of an incomplete quantum (at most 3), carried to the next
    /// chunk.
    pending: Vec<u8>,
}

impl TextDecoder {
    /// Decodes every complete quantum of what arrived so far, straight from
    /// the chunk: only an incomplete quantum is copied.
    pub fn push(&mut self, mut chunk: &[u8]) -> Result<Bytes, GrpcBodyError> {
        let mut out = Vec::with_capacity((self.pending.len() + chunk.len()) / 4 * 3);
        if !self.pending.is_empty() {
            let n = (4 - self.pending.len()).min(chunk.len());
            self.pending.extend_from_slice(&chunk[..n]);
            chunk = &chunk[n..];
            if self.pending.len() < 4 {
                return Ok(Bytes::new());
            }
            decode_quanta(&self.pending, &mut out)?;
            self.pending.clear();
        }
        let whole = chunk.len() / 4 * 4;
        decode_quanta(&chunk[..whole], &mut out)?;
        self.pending.extend_from_slice(&chunk[whole..]);
        Ok(Bytes::from(out))
    }

    /// At the end of the body: a last quantum without its padding decodes;
    /// a single stray character is an error.
    pub fn finish(&mut self) -> Result<Bytes, GrpcBodyError> {
        let tail = std::mem::take(&mut self.pending);
        let mut out = Vec::new();
        match tail.len() {
            0 => {}
            1 => return Err(GrpcBodyError::InvalidBase64),
            _ => decode_quanta(&tail, &mut out)?,
        }
        Ok(Bytes::from(out))
    }
}

/// Decodes whole quanta into `out`, splitting after every padded one so
/// that padding in the middle of the body is accepted.
fn decode_quanta(input: &[u8], out: &mut Vec<u8>) -> Result<(), GrpcBodyError> {
    let mut start = 0;
    while start < input.len() {
        let end = match input[start..].iter().position(|&b| b == b'=') {
            // The end of the quantum holding the first `=`.
            Some(i) => ((start + i) / 4 + 1) * 4,
            None => input.len(),
        }
        .min(input.len());
        LENIENT
            .decode_vec(&input[start..end], out)
            .map_err(|_| GrpcBodyError::InvalidBase64)?;
        start = end;
    }
    Ok(())
}

/// Turns a gRPC response body into a gRPC-Web one, frame by frame: data
/// passes through (base64 per frame in text mode, each piece padded, which
/// clients decode by 4-character quanta), trailers become the final `0x80`
/// frame.
#[derive(Debug)]
pub struct WebEncoder {
    text: bool,
    /// Where the upstream's messages begin and end, so that a status the
    /// proxy adds never lands inside a message.
    cursor: FrameCursor,
    /// The trailer frame has been produced.
    done: bool,
}

impl WebEncoder {
    pub fn new(text: bool) -> Self {
        Self {
            text,
            cursor: FrameCursor::new(u64::MAX),
            done: false,
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn encode(&mut self, frame: Frame<Bytes>) -> Frame<Bytes> {
        match frame.into_data() {
            Ok(data) => {
                // Cannot fail: there is no limit.
                let _ = self.cursor.advance(&data);
                Frame::data(self.wrap(data))
            }
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

    /// Ends the call with the proxy's own status, when that can still be
    /// said: before the upstream's trailers and between two messages.
    pub fn fail(&mut self, code: Code, message: &str) -> Option<Bytes> {
        if self.done || !self.cursor.at_boundary() {
            return None;
        }
        self.done = true;
        Some(self.wrap(trailer_frame(&status_trailers(code, message))))
    }

    /// When the upstream body ended: a stream that never sent trailers broke
    /// the protocol, and the client still needs a status.
    pub fn finish(&mut self) -> Option<Bytes> {
        self.fail(Code::Internal, "upstream ended the stream without trailers")
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
            Err(GrpcBodyError::InvalidBase64)
        );
        let mut d = TextDecoder::default();
        assert_eq!(d.push(b"aGVsbG8=a").unwrap(), Bytes::from_static(b"hello"));
        assert_eq!(d.finish(), Err(GrpcBodyError::InvalidBase64));
        // An unpadded last quantum is accepted.
        let mut d = TextDecoder::default();
        assert_eq!(d.push(b"aGk").unwrap(), Bytes::new());
        assert_eq!(d.finish().unwrap(), Bytes::from_static(b"hi"));
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
        let data = enc.encode(Frame::data(Bytes::from_static(b"\x00\x00\x00\x00\x02hi")));
        assert_eq!(
            data.into_data().unwrap(),
            Bytes::from_static(b"AAAAAAJoaQ==")
        );
        let last = enc.finish().unwrap();
        let raw = STANDARD.decode(&last).unwrap();
        assert_eq!(raw[0], 0x80);
        let text = String::from_utf8_lossy(&raw[5..]);
        assert!(text.starts_with("grpc-status: 13\r\n"), "{text}");
    }

    #[test]
    fn a_status_is_never_added_inside_a_message() {
        let mut enc = WebEncoder::new(false);
        // Header says 4 bytes, only 2 arrived.
        enc.encode(Frame::data(Bytes::from_static(b"\x00\x00\x00\x00\x04ab")));
        assert_eq!(enc.fail(Code::Unavailable, "reset"), None);
        enc.encode(Frame::data(Bytes::from_static(b"cd")));
        let last = enc.fail(Code::Unavailable, "reset").unwrap();
        assert_eq!(last[0], 0x80);
        assert!(enc.is_done());
        assert_eq!(enc.finish(), None);
    }
}
