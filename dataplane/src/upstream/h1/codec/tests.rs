use bytes::BytesMut;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{Empty, Full, StreamBody};

use super::*;

// === request heads ===

fn head_of(method: Method, uri: &str, headers: &[(&str, &str)], framing: RequestFraming) -> String {
    let mut map = HeaderMap::new();
    for (n, v) in headers {
        map.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let mut dst = b"left over".to_vec();
    encode_head(
        &mut dst,
        &method,
        &uri.parse::<Uri>().unwrap(),
        &map,
        None,
        framing,
    );
    String::from_utf8(dst).unwrap()
}

#[test]
fn request_heads_carry_the_target_and_headers_as_given() {
    assert_eq!(
        head_of(
            Method::GET,
            "/a/b?c=d",
            &[("host", "example.com"), ("x-many", "1"), ("x-many", "2")],
            RequestFraming::Empty
        ),
        "GET /a/b?c=d HTTP/1.1\r\nhost: example.com\r\nx-many: 1\r\nx-many: 2\r\n\r\n"
    );
    assert_eq!(
        head_of(
            Method::POST,
            "/",
            &[("content-length", "3")],
            RequestFraming::Length { len: 3, add: false }
        ),
        "POST / HTTP/1.1\r\ncontent-length: 3\r\n\r\n"
    );
    assert_eq!(
        head_of(
            Method::PUT,
            "/",
            &[],
            RequestFraming::Length {
                len: 1234567,
                add: true
            }
        ),
        "PUT / HTTP/1.1\r\ncontent-length: 1234567\r\n\r\n"
    );
    assert_eq!(
        head_of(Method::POST, "/", &[], RequestFraming::Chunked),
        "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    assert_eq!(
        head_of(Method::OPTIONS, "*", &[], RequestFraming::Empty),
        "OPTIONS * HTTP/1.1\r\n\r\n"
    );
}

#[test]
fn chunks_are_framed_in_hex_and_empty_data_is_not_a_chunk() {
    let mut dst = Vec::new();
    encode_chunk(&mut dst, &[b'x'; 26]);
    encode_chunk(&mut dst, b"");
    encode_chunk(&mut dst, b"y");
    dst.extend_from_slice(LAST_CHUNK);
    let mut want = b"1a\r\n".to_vec();
    want.extend_from_slice(&[b'x'; 26]);
    want.extend_from_slice(b"\r\n1\r\ny\r\n0\r\n\r\n");
    assert_eq!(dst, want);
}

#[test]
fn plan_matches_what_hyper_would_send_and_leaves_the_rest_to_it() {
    let get = Request::get("/").body(Empty::<Bytes>::new()).unwrap();
    assert_eq!(plan(&get), Some(RequestFraming::Empty));
    let sized = Request::post("/")
        .body(Full::new(Bytes::from("abc")))
        .unwrap();
    assert_eq!(
        plan(&sized),
        Some(RequestFraming::Length { len: 3, add: true })
    );
    let declared = Request::post("/")
        .header("content-length", "3")
        .body(Full::new(Bytes::from("abc")))
        .unwrap();
    assert_eq!(
        plan(&declared),
        Some(RequestFraming::Length { len: 3, add: false })
    );
    let stream = || {
        StreamBody::new(futures_util::stream::iter(vec![Ok::<
            _,
            std::convert::Infallible,
        >(
            http_body::Frame::data(Bytes::from("x")),
        )]))
    };
    let unknown = Request::post("/").body(stream()).unwrap();
    assert_eq!(plan(&unknown), Some(RequestFraming::Chunked));
    // hyper sends no body on a GET of unknown length: left to it.
    assert_eq!(plan(&Request::get("/").body(stream()).unwrap()), None);
    for left in [
        Request::get("/")
            .header("upgrade", "websocket")
            .body(Empty::<Bytes>::new()),
        Request::connect("example.com:443").body(Empty::<Bytes>::new()),
        Request::post("/")
            .header("trailer", "x-sum")
            .body(Empty::<Bytes>::new()),
        Request::post("/")
            .header("transfer-encoding", "gzip")
            .body(Empty::<Bytes>::new()),
        Request::post("/")
            .header("content-length", "x")
            .body(Empty::<Bytes>::new()),
        Request::get("/")
            .version(http::Version::HTTP_10)
            .body(Empty::<Bytes>::new()),
    ] {
        assert_eq!(plan(&left.unwrap()), None);
    }
}

// === response heads ===

/// Parses `input` fed in two pieces split at `at`: `None` until complete.
fn parse_split(input: &[u8], at: usize, head_request: bool) -> Result<(Head, BytesMut), Error> {
    let mut buf = BytesMut::from(&input[..at]);
    if let Some(head) = parse_head(&mut buf, head_request)? {
        // Complete in the first piece: the rest follows the head.
        buf.extend_from_slice(&input[at..]);
        return Ok((head, buf));
    }
    buf.extend_from_slice(&input[at..]);
    let head = parse_head(&mut buf, head_request)?.expect("complete");
    Ok((head, buf))
}

#[test]
fn a_head_parses_the_same_at_every_split_point() {
    let input = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Two: a\r\nx-two: b\r\n\r\nhello";
    for at in 0..=input.len() {
        let (head, rest) = parse_split(input, at, false).unwrap();
        assert_eq!(head.response.status(), StatusCode::OK);
        assert_eq!(head.framing, ResponseFraming::Length(5));
        assert!(head.reusable);
        let two: Vec<_> = head.response.headers().get_all("x-two").iter().collect();
        assert_eq!(two, ["a", "b"]);
        assert_eq!(&rest[..], b"hello", "split at {at}");
        assert!(
            head.response
                .extensions()
                .get::<hyper::ext::ReasonPhrase>()
                .is_none()
        );
    }
}

fn parse(input: &str) -> Result<Option<Head>, Error> {
    parse_head(&mut BytesMut::from(input), false)
}

fn framing(input: &str) -> (ResponseFraming, bool) {
    let head = parse(input).unwrap().unwrap();
    (head.framing, head.reusable)
}

#[test]
fn framing_follows_rfc_9112() {
    use ResponseFraming::*;
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
        (Length(0), true)
    );
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\ncontent-length: 7\r\n\r\n"),
        (Length(7), true)
    );
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
        (Chunked, true)
    );
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n"),
        (Chunked, true)
    );
    // Not ending in chunked: read to close.
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n"),
        (Close, false)
    );
    assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n"), (Close, false));
    // Both: transfer-encoding wins, content-length goes, no reuse.
    let head = parse("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!((head.framing, head.reusable), (Chunked, false));
    assert!(!head.response.headers().contains_key("content-length"));
    // No body whatever the head says.
    for status in ["204 No Content", "304 Not Modified"] {
        assert_eq!(
            framing(&format!("HTTP/1.1 {status}\r\ncontent-length: 10\r\n\r\n")),
            (Empty, true)
        );
    }
    let mut head_rsp = BytesMut::from("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n");
    let head = parse_head(&mut head_rsp, true).unwrap().unwrap();
    assert_eq!(head.framing, Empty);
    assert_eq!(head.response.headers()["content-length"], "10");
    // Reuse: HTTP/1.1 without close only.
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\nconnection: keep-alive, Close\r\ncontent-length: 0\r\n\r\n"),
        (Length(0), false)
    );
    assert_eq!(
        framing("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n"),
        (Length(0), false)
    );
}

#[test]
fn invalid_content_lengths_and_te_on_http_1_0_are_errors() {
    for cl in ["-1", "", "1x", "0x10", "1, 2", "99999999999999999999", "+5"] {
        let input = format!("HTTP/1.1 200 OK\r\ncontent-length: {cl}\r\n\r\n");
        assert!(matches!(parse(&input), Err(Error::ContentLength)), "{cl:?}");
    }
    assert!(matches!(
        parse("HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"),
        Err(Error::ContentLength)
    ));
    assert!(matches!(
        parse("HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
        Err(Error::TransferEncoding)
    ));
}

#[test]
fn informational_responses_are_skipped_and_101_is_refused() {
    let mut buf = BytesMut::from(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n",
    );
    let head = parse_head(&mut buf, false).unwrap().unwrap();
    assert_eq!(head.response.status(), StatusCode::CREATED);
    assert!(!head.response.headers().contains_key("link"));
    assert!(buf.is_empty());
    // A 1xx alone: more is needed, and it is not parsed twice.
    let mut buf = BytesMut::from("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2");
    assert!(parse_head(&mut buf, false).unwrap().is_none());
    assert_eq!(&buf[..], b"HTTP/1.1 2");
    assert!(matches!(
        parse("HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n"),
        Err(Error::UnexpectedUpgrade)
    ));
}

#[test]
fn a_custom_reason_phrase_is_kept() {
    let head = parse("HTTP/1.1 200 Fine Thanks\r\ncontent-length: 0\r\n\r\n")
        .unwrap()
        .unwrap();
    let reason = head
        .response
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .unwrap();
    assert_eq!(reason.as_bytes(), b"Fine Thanks");
}

#[test]
fn heads_are_bounded_and_bad_bytes_refused() {
    // Over the size bound, complete or not.
    let big = format!("HTTP/1.1 200 OK\r\nx: {}\r\n", "a".repeat(MAX_HEAD));
    assert!(matches!(parse(&big), Err(Error::HeadTooLarge)));
    assert!(matches!(
        parse(&format!("{big}\r\n")),
        Err(Error::HeadTooLarge)
    ));
    // Just under it parses.
    let fits = format!(
        "HTTP/1.1 200 OK\r\nx: {}\r\n\r\n",
        "a".repeat(MAX_HEAD - 40)
    );
    assert!(parse(&fits).unwrap().is_some());
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    assert!(matches!(
        parse(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")),
        Err(Error::TooManyHeaders)
    ));
    let enough: String = (0..MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    assert!(
        parse(&format!("HTTP/1.1 200 OK\r\n{enough}\r\n"))
            .unwrap()
            .is_some()
    );
    for bad in [
        "HTTP/1.1 200 OK\r\nx: a\r\n folded\r\n\r\n",
        "HTTP/1.1 200 OK\r\nx y: a\r\n\r\n",
        "HTTP/1.1 200 OK\r\nx: a\x01b\r\n\r\n",
        "HTTP/2 200 OK\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "garbage\r\n\r\n",
    ] {
        assert!(parse(bad).is_err(), "{bad:?}");
    }
    assert!(matches!(
        parse("HTTP/1.1 099 Low\r\n\r\n"),
        Err(Error::Status | Error::Parse(_))
    ));
}

// === chunked bodies ===

/// Decodes `input` fed in pieces split at `cuts`: the data, the trailers,
/// and whether the end was seen.
fn decode_pieces(
    input: &[u8],
    cuts: &[usize],
) -> Result<(Vec<u8>, Option<HeaderMap>, bool), Error> {
    let mut dec = Chunked::default();
    let mut buf = BytesMut::new();
    let (mut data, mut trailers, mut ended) = (Vec::new(), None, false);
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&input.len())) {
        buf.extend_from_slice(&input[from..to]);
        from = to;
        loop {
            match dec.decode(&mut buf)? {
                Decoded::Data(d) => {
                    assert!(!d.is_empty());
                    data.extend_from_slice(&d);
                }
                Decoded::Trailers(t) => trailers = Some(t),
                Decoded::End => {
                    ended = true;
                    break;
                }
                Decoded::More => break,
            }
        }
    }
    Ok((data, trailers, ended))
}

#[test]
fn chunked_bodies_decode_the_same_at_every_split_point() {
    let input = b"5;name=value\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-sum: 42\r\nx-other: a\r\n\r\n";
    for at in 0..=input.len() {
        let (data, trailers, ended) = decode_pieces(input, &[at]).unwrap();
        assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz", "split at {at}");
        let trailers = trailers.expect("trailers");
        assert_eq!(trailers["x-sum"], "42");
        assert_eq!(trailers["x-other"], "a");
        assert!(ended);
    }
    // Without trailers, and with bare LF line ends.
    for input in [&b"3\r\nabc\r\n0\r\n\r\n"[..], b"3\nabc\n0\n\n"] {
        for at in 0..=input.len() {
            let (data, trailers, ended) = decode_pieces(input, &[at]).unwrap();
            assert_eq!(
                (data.as_slice(), trailers, ended),
                (&b"abc"[..], None, true)
            );
        }
    }
}

#[test]
fn the_decoder_leaves_bytes_after_the_body_alone() {
    let mut buf = BytesMut::from("1\r\na\r\n0\r\n\r\nHTTP/1.1");
    let mut dec = Chunked::default();
    assert_eq!(
        dec.decode(&mut buf).unwrap(),
        Decoded::Data(Bytes::from("a"))
    );
    assert_eq!(dec.decode(&mut buf).unwrap(), Decoded::End);
    assert_eq!(&buf[..], b"HTTP/1.1");
    assert_eq!(dec.decode(&mut buf).unwrap(), Decoded::End);
}

#[test]
fn chunked_bounds_and_bad_framing_are_errors() {
    let overflow = b"10000000000000000\r\n";
    assert!(matches!(
        decode_pieces(overflow, &[]),
        Err(Error::Chunk("chunk size overflows"))
    ));
    // The largest size that fits is only a size.
    assert!(decode_pieces(b"ffffffffffffffff\r\n", &[]).is_ok());
    let long_line = format!("1;{}\r\n", "e".repeat(MAX_CHUNK_EXTENSIONS + 1));
    assert!(decode_pieces(long_line.as_bytes(), &[]).is_err());
    // No line end in sight: refused once the bound is passed, not buffered.
    let endless = format!("1;{}", "e".repeat(MAX_CHUNK_EXTENSIONS + 40));
    assert!(matches!(
        decode_pieces(endless.as_bytes(), &[]),
        Err(Error::Chunk("chunk-size line too long"))
    ));
    // Extensions add up across chunks.
    let many: String = (0..20)
        .map(|_| format!("1;{}\r\na\r\n", "e".repeat(1000)))
        .collect();
    assert!(matches!(
        decode_pieces(many.as_bytes(), &[]),
        Err(Error::Chunk("chunk extensions too long"))
    ));
    let big_trailers = format!("0\r\nx: {}\r\n", "t".repeat(MAX_TRAILERS));
    assert!(matches!(
        decode_pieces(big_trailers.as_bytes(), &[]),
        Err(Error::Chunk("trailer section too large"))
    ));
    let many_trailers: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    assert!(matches!(
        decode_pieces(format!("0\r\n{many_trailers}\r\n").as_bytes(), &[]),
        Err(Error::TooManyHeaders)
    ));
    for bad in [
        &b"x\r\n"[..],
        b"\r\n",
        b"-1\r\n",
        b"3\r\nabcX\r\n",
        b"3 x\r\nabc\r\n",
        b"3;a\x01\r\nabc\r\n",
        b"0\r\nx y: z\r\n\r\n",
    ] {
        assert!(
            decode_pieces(bad, &[]).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

/// Random bytes and random splits, head then chunked body: every step
/// either errs, asks for more, or consumes something, so this ends.
#[test]
fn random_input_never_panics_or_loops() {
    let mut rng = fastrand::Rng::with_seed(23);
    let alphabet = b"HTTP/1.1 200 OK\r\n:;0123456789abcdefxX \t\x00\xff,chunked content-length transfer-encoding";
    for _ in 0..3000 {
        let len = rng.usize(0..300);
        let input: Vec<u8> = (0..len)
            .map(|_| {
                if rng.bool() {
                    alphabet[rng.usize(0..alphabet.len())]
                } else {
                    rng.u8(..)
                }
            })
            .collect();
        let mut cuts: Vec<usize> = (0..rng.usize(0..5)).map(|_| rng.usize(0..=len)).collect();
        cuts.sort_unstable();
        let _ = decode_pieces(&input, &cuts);
        let mut buf = BytesMut::new();
        let mut from = 0;
        for &to in cuts.iter().chain(std::iter::once(&len)) {
            buf.extend_from_slice(&input[from..to]);
            from = to;
            if !matches!(parse_head(&mut buf, rng.bool()), Ok(None)) {
                break;
            }
        }
        // A valid prefix with random continuation.
        let mut framed = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        framed.extend_from_slice(&input);
        let mut buf = BytesMut::from(&framed[..]);
        if let Ok(Some(_)) = parse_head(&mut buf, false) {
            let mut dec = Chunked::default();
            for _ in 0..=buf.len() + 2 {
                let before = buf.len();
                match dec.decode(&mut buf) {
                    Ok(Decoded::Data(_) | Decoded::Trailers(_)) => {
                        assert!(buf.len() < before || before == 0)
                    }
                    _ => break,
                }
            }
        }
    }
}
