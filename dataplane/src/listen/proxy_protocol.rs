//! The PROXY protocol (HAProxy's v1 text and v2 binary headers), as load
//! balancers that keep no HTTP (AWS NLB, and others) use to pass on the
//! client's address: with `--proxy-protocol` every connection on the proxy
//! listeners begins with one, before any HTTP or TLS byte.
//!
//! This module finds where the header ends (v1: its line, at most 107
//! bytes; v2: its length field) so that it never waits for bytes the
//! sender will not send, and bounds it; `ppp` parses it. Bytes read past
//! the header belong to the stream after it and are handed back.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The v2 signature.
const V2_SIGNATURE: &[u8] = ppp::v2::PROTOCOL_PREFIX;
/// Signature, version/command, family/transport and the 2-byte length.
const V2_FIXED: usize = 16;
/// A v1 header, `PROXY ` to `\r\n`, is at most this long (the spec's bound).
const V1_MAX: usize = 107;
const V1_PREFIX: &[u8] = b"PROXY ";

/// The longest v2 header accepted, TLVs included. Load balancers add a few
/// small TLVs (AWS: the VPC endpoint id; TLS facts from HAProxy); a header
/// claiming more is refused before its rest is read.
pub const MAX_HEADER: usize = 4096;

/// Why a connection's PROXY header was refused. Every one closes the
/// connection.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("the connection did not begin with a PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol v1 header: {0}")]
    MalformedV1(#[source] ppp::v1::BinaryParseError),
    #[error("malformed PROXY protocol v2 header: {0}")]
    MalformedV2(#[source] ppp::v2::ParseError),
    #[error("PROXY protocol header longer than {limit} bytes")]
    Oversized { limit: usize },
    #[error("the connection closed inside its PROXY protocol header")]
    Closed,
    #[error("no complete PROXY protocol header in time")]
    Timeout,
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

impl ProxyHeaderError {
    /// Every [`ProxyHeaderError::reason`], for metrics resolved at start.
    pub const REASONS: [&'static str; 6] = [
        "missing",
        "malformed",
        "oversized",
        "closed",
        "timeout",
        "io",
    ];

    /// A bounded metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::MalformedV1(_) | Self::MalformedV2(_) => "malformed",
            Self::Oversized { .. } => "oversized",
            Self::Closed => "closed",
            Self::Timeout => "timeout",
            Self::Io(_) => "io",
        }
    }
}

/// A connection's PROXY header, read.
#[derive(Debug)]
pub struct ProxyHeader {
    /// The client's address it carries; `None` for v1 `UNKNOWN`, v2
    /// `LOCAL` (the balancer's own health checks) and families other than
    /// TCP over IPv4 or IPv6: the socket's peer stands then.
    pub source: Option<SocketAddr>,
    /// Bytes read past the header: the start of the HTTP or TLS stream.
    pub rest: Bytes,
}

/// Where the header in `buf` ends, as far as its first bytes tell.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    NeedMore,
    V1(usize),
    V2(usize),
    Missing,
    Oversized,
}

fn frame(buf: &[u8]) -> Frame {
    let head = buf.len().min(V2_SIGNATURE.len());
    if buf[..head] == V2_SIGNATURE[..head] {
        if buf.len() < V2_FIXED {
            return Frame::NeedMore;
        }
        let len = V2_FIXED + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        return match len {
            len if len > MAX_HEADER => Frame::Oversized,
            len if buf.len() < len => Frame::NeedMore,
            len => Frame::V2(len),
        };
    }
    let head = buf.len().min(V1_PREFIX.len());
    if buf[..head] != V1_PREFIX[..head] {
        return Frame::Missing;
    }
    let line = &buf[..buf.len().min(V1_MAX)];
    match line.iter().position(|b| *b == b'\n') {
        Some(end) => Frame::V1(end + 1),
        None if buf.len() >= V1_MAX => Frame::Oversized,
        None => Frame::NeedMore,
    }
}

/// The source address of a whole header.
fn parse(frame: Frame, header: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    use ppp::{v1, v2};
    match frame {
        Frame::V1(_) => {
            let h = v1::Header::try_from(header).map_err(ProxyHeaderError::MalformedV1)?;
            Ok(match h.addresses {
                v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Unknown => None,
            })
        }
        _ => {
            let h = v2::Header::try_from(header).map_err(ProxyHeaderError::MalformedV2)?;
            if h.command == v2::Command::Local || h.protocol != v2::Protocol::Stream {
                return Ok(None);
            }
            Ok(match h.addresses {
                v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
            })
        }
    }
}

/// Reads a connection's PROXY header. Callers bound the time it may take.
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<ProxyHeader, ProxyHeaderError> {
    // Most headers (and what follows them in the same segment) fit.
    let mut buf = BytesMut::with_capacity(512);
    loop {
        match frame(&buf) {
            Frame::NeedMore => {}
            Frame::Missing => return Err(ProxyHeaderError::Missing),
            Frame::Oversized => return Err(ProxyHeaderError::Oversized { limit: MAX_HEADER }),
            f @ (Frame::V1(len) | Frame::V2(len)) => {
                let rest = buf.split_off(len).freeze();
                let source = parse(f, &buf)?;
                return Ok(ProxyHeader { source, rest });
            }
        }
        // The frame needs more, and bounds how much: a v2 header's
        // declared length is at most MAX_HEADER.
        if buf.len() == buf.capacity() {
            buf.reserve(1024);
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(ProxyHeaderError::Closed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        h.extend_from_slice(payload);
        h
    }

    async fn read(bytes: &[u8]) -> Result<ProxyHeader, ProxyHeaderError> {
        // One byte at a time: every frame boundary is met partway.
        let mut stream = one_byte_at_a_time(bytes);
        read_header(&mut stream).await
    }

    /// A reader yielding `bytes` one at a time, then end of stream.
    fn one_byte_at_a_time(bytes: &[u8]) -> impl AsyncRead + Unpin {
        struct OneByOne(std::collections::VecDeque<u8>);
        impl AsyncRead for OneByOne {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                if let Some(b) = self.0.pop_front() {
                    buf.put_slice(&[b]);
                }
                std::task::Poll::Ready(Ok(()))
            }
        }
        OneByOne(bytes.iter().copied().collect())
    }

    #[tokio::test]
    async fn v1_addresses_and_what_follows() {
        for (text, source) in [
            (
                "PROXY TCP4 203.0.113.7 10.0.0.1 4711 80\r\n",
                Some("203.0.113.7:4711"),
            ),
            (
                "PROXY TCP6 2001:db8::7 2001:db8::1 4711 443\r\n",
                Some("[2001:db8::7]:4711"),
            ),
            ("PROXY UNKNOWN\r\n", None),
            ("PROXY UNKNOWN 2001:db8::7 2001:db8::1 4711 443\r\n", None),
        ] {
            let input = format!("{text}GET / HTTP/1.1\r\n");
            let h = read(input.as_bytes()).await.unwrap();
            assert_eq!(h.source, source.map(|s| s.parse().unwrap()), "{text}");
            // One byte at a time: nothing past the header was read.
            assert_eq!(h.rest, "", "{text}");

            let mut whole = input.as_bytes();
            let h = read_header(&mut whole).await.unwrap();
            assert_eq!(h.rest, "GET / HTTP/1.1\r\n", "{text}");
        }
    }

    #[tokio::test]
    async fn v2_addresses_local_and_what_follows() {
        let ipv4 = [203, 0, 113, 7, 10, 0, 0, 1, 0x12, 0x67, 0, 80];
        let mut ipv6 = Vec::new();
        ipv6.extend_from_slice(
            &"2001:db8::7"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        ipv6.extend_from_slice(&[0; 16]);
        ipv6.extend_from_slice(&[0x12, 0x67, 1, 187]);
        // A TLV after the addresses (NOOP, 3 bytes).
        let mut with_tlv = ipv4.to_vec();
        with_tlv.extend_from_slice(&[0x04, 0, 3, 1, 2, 3]);
        for (header, source) in [
            (v2(1, 0x11, &ipv4), Some("203.0.113.7:4711")),
            (v2(1, 0x21, &ipv6), Some("[2001:db8::7]:4711")),
            (v2(1, 0x11, &with_tlv), Some("203.0.113.7:4711")),
            // LOCAL: the balancer's own connection (its health checks).
            (v2(0, 0x11, &ipv4), None),
            (v2(0, 0x00, &[]), None),
            // PROXY over UNSPEC, or UDP: the socket's peer stands.
            (v2(1, 0x00, &[]), None),
            (v2(1, 0x12, &ipv4), None),
        ] {
            let mut input = header.clone();
            input.extend_from_slice(b"\x16\x03\x01");
            let h = read(&input).await.unwrap();
            assert_eq!(h.source, source.map(|s| s.parse().unwrap()), "{header:?}");
            let mut whole = input.as_slice();
            let h = read_header(&mut whole).await.unwrap();
            assert_eq!(h.rest, &b"\x16\x03\x01"[..]);
        }
    }

    #[tokio::test]
    async fn missing_malformed_oversized_and_cut_headers_are_refused() {
        let reason = |r: Result<ProxyHeader, ProxyHeaderError>| r.unwrap_err().reason();
        assert_eq!(reason(read(b"GET / HTTP/1.1\r\n\r\n").await), "missing");
        assert_eq!(reason(read(b"\x16\x03\x01\x02\x00").await), "missing");
        assert_eq!(reason(read(b"PROXY\r\n").await), "missing");
        assert_eq!(
            reason(read(b"proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n").await),
            "missing"
        );
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n",
            b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
            b"PROXY \xff\r\n",
        ] {
            assert_eq!(
                reason(read(bad).await),
                "malformed",
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // v2 with a bad version, command, family, or too short for its family.
        let mut bad_version = v2(1, 0x11, &[0; 12]);
        bad_version[12] = 0x11;
        assert_eq!(reason(read(&bad_version).await), "malformed");
        assert_eq!(reason(read(&v2(2, 0x11, &[0; 12])).await), "malformed");
        assert_eq!(reason(read(&v2(1, 0x41, &[0; 12])).await), "malformed");
        assert_eq!(reason(read(&v2(1, 0x11, &[0; 4])).await), "malformed");

        // v1 without its line end within 107 bytes.
        let long = format!("PROXY TCP4 {}", "1".repeat(200));
        assert_eq!(reason(read(long.as_bytes()).await), "oversized");
        // v2 declaring more than the limit: refused on its length alone.
        let mut big = v2(1, 0x11, &[]);
        big[14..16].copy_from_slice(&u16::try_from(MAX_HEADER).unwrap().to_be_bytes());
        assert_eq!(reason(read(&big).await), "oversized");
        // The largest accepted.
        let h = read(&v2(1, 0x11, &vec![0; MAX_HEADER - V2_FIXED])).await;
        assert!(h.is_ok(), "{h:?}");

        // The peer closes partway.
        assert_eq!(reason(read(b"").await), "closed");
        assert_eq!(reason(read(b"PROXY TCP4 1.2.3.4").await), "closed");
        assert_eq!(reason(read(&v2(1, 0x11, &[0; 12])[..20]).await), "closed");
    }
}
