//! The access log: one JSON line per request, formatted into a recycled
//! buffer and handed to a writer thread through a bounded, lossy queue.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crossbeam_queue::ArrayQueue;
use prometheus_client::metrics::counter::Counter;

use super::format::{push_int, write_rfc3339};
use crate::request::forwarded::ClientAddr;

/// One access-log line, as the request path hands it over.
#[derive(Debug)]
pub struct AccessRecord {
    pub time: SystemTime,
    pub request_id: http::HeaderValue,
    /// `ip:port`, or `ip` alone for an address from `X-Forwarded-For`
    /// without a port.
    pub client_addr: ClientAddr,
    pub method: http::Method,
    pub host: http::HeaderValue,
    /// Only the path is logged: query strings often carry secrets.
    pub uri: http::Uri,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration: Duration,
    pub upstream_addr: Option<SocketAddr>,
    pub route: Arc<str>,
}

impl AccessRecord {
    /// Appends the record as one JSON object and a newline. Written by
    /// hand: this runs once per request, and the fields are few and fixed.
    /// Strings are escaped as JSON requires; bytes that are not UTF-8
    /// become U+FFFD.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"time\":\"");
        write_rfc3339(out, self.time);
        out.extend_from_slice(b"\",\"request_id\":");
        json_str(out, self.request_id.as_bytes());
        out.extend_from_slice(b",\"client_addr\":\"");
        match self.client_addr.port {
            Some(port) => push_addr(out, SocketAddr::new(self.client_addr.ip, port)),
            None => {
                let _ = write!(out, "{}", self.client_addr.ip);
            }
        }
        out.extend_from_slice(b"\",\"method\":");
        json_str(out, self.method.as_str().as_bytes());
        out.extend_from_slice(b",\"host\":");
        json_str(out, self.host.as_bytes());
        out.extend_from_slice(b",\"path\":");
        json_str(out, self.uri.path().as_bytes());
        out.extend_from_slice(b",\"status\":");
        push_int(out, u64::from(self.status), 1);
        out.extend_from_slice(b",\"bytes_in\":");
        push_int(out, self.bytes_in, 1);
        out.extend_from_slice(b",\"bytes_out\":");
        push_int(out, self.bytes_out, 1);
        // Milliseconds with three decimals: microsecond resolution.
        let micros = self.duration.as_micros();
        out.extend_from_slice(b",\"duration_ms\":");
        push_int(out, (micros / 1000) as u64, 1);
        out.push(b'.');
        push_int(out, (micros % 1000) as u64, 3);
        out.extend_from_slice(b",\"upstream_addr\":");
        match self.upstream_addr {
            None => out.extend_from_slice(b"null"),
            Some(a) => {
                out.push(b'"');
                push_addr(out, a);
                out.push(b'"');
            }
        }
        out.extend_from_slice(b",\"route\":");
        json_str(out, self.route.as_bytes());
        out.extend_from_slice(b"}\n");
    }
}

/// `addr` as its `Display` writes it; IPv4 without the formatting
/// machinery, which costs more than the rest of the line.
fn push_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            // Written into a buffer of the longest form
            // ("255.255.255.255:65535") and copied once: a push per piece
            // was ten copies and a dozen capacity checks per address.
            let mut buf = [0u8; 21];
            let mut n = 0;
            for (i, octet) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                n += put_decimal(&mut buf[n..], u16::from(octet));
            }
            buf[n] = b':';
            n += 1;
            n += put_decimal(&mut buf[n..], a.port());
            out.extend_from_slice(&buf[..n]);
        }
        SocketAddr::V6(_) => {
            let _ = write!(out, "{addr}");
        }
    }
}

/// Writes `v` in decimal at the start of `dst` (five bytes suffice);
/// how many bytes it took.
fn put_decimal(dst: &mut [u8], mut v: u16) -> usize {
    let len = match v {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1000..=9999 => 4,
        _ => 5,
    };
    for d in dst[..len].iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    len
}

/// A JSON string: quoted, with `"`, `\\` and control characters escaped.
fn json_str(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    // Almost every value (ids, methods, hosts, paths, routes) is printable
    // ASCII with nothing to escape: one pass tells, and it is copied whole.
    if is_plain(bytes) {
        out.extend_from_slice(bytes);
    } else {
        json_escaped(out, bytes);
    }
    out.push(b'"');
}

/// Whether `bytes` is printable ASCII without `"` or `\\`: nothing to
/// escape. Eight bytes at a time (the checks for a byte below 0x20 or equal
/// to one value are the classic word tricks, exact for whether any byte
/// matches once no byte is 0x80 or above): a byte at a time, this was most
/// of the log line's cost.
fn is_plain(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    /// Some byte of `x` is zero.
    fn any_zero(x: u64) -> bool {
        x.wrapping_sub(ONES) & !x & HIGH != 0
    }
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut word = [0; 8];
        word.copy_from_slice(w);
        let x = u64::from_ne_bytes(word);
        // Non-ASCII, a control byte (below 0x20), `"` or `\`.
        if x & HIGH != 0
            || x.wrapping_sub(ONES * 0x20) & !x & HIGH != 0
            || any_zero(x ^ (ONES * u64::from(b'"')))
            || any_zero(x ^ (ONES * u64::from(b'\\')))
        {
            return false;
        }
    }
    words
        .remainder()
        .iter()
        .all(|&b| (0x20..0x80).contains(&b) && b != b'"' && b != b'\\')
}

/// The inside of a JSON string for bytes that need escaping or are not
/// ASCII; bytes that are not UTF-8 become U+FFFD.
fn json_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let lossy;
    let text = match std::str::from_utf8(bytes) {
        Ok(_) => bytes,
        Err(_) => {
            lossy = String::from_utf8_lossy(bytes);
            lossy.as_bytes()
        }
    };
    let mut clean = 0;
    for (i, &b) in text.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&text[clean..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        clean = i + 1;
    }
    out.extend_from_slice(&text[clean..]);
}

/// Where access-log lines go.
pub enum AccessLogSink {
    Stdout,
    Disabled,
    /// Any writer; lines are written by a dedicated thread, never a request.
    Writer(Box<dyn Write + Send>),
}

/// The request side of the access log: a bounded, lossy, lock-free queue of
/// formatted lines.
///
/// The request formats its own line (nginx does the same): a fraction of a
/// microsecond per request, spread evenly, where formatting batches on the
/// writer thread stole the proxy's core in bursts and showed in its p99.
/// Line buffers come back from the writer through `free`, so a steady
/// stream allocates nothing. The writer thread is never woken per line:
/// waking it costs a context switch per request when it shares a core with
/// the proxy. It wakes on a short period instead, and writes what came.
#[derive(Clone)]
pub struct AccessLog {
    queues: Option<Arc<LineQueues>>,
    dropped: Counter,
}

struct LineQueues {
    lines: ArrayQueue<Vec<u8>>,
    free: ArrayQueue<Vec<u8>>,
}

/// How often the writer thread drains the queue. The queue must hold what
/// arrives in one period: 16k lines per 4 ms is 4M requests/s.
const LOG_FLUSH_PERIOD: Duration = Duration::from_millis(4);

/// Line buffers start at this capacity; one that grew past
/// [`LINE_KEEP_CAPACITY`] (a huge host or path) is not kept for reuse.
const LINE_CAPACITY: usize = 384;
const LINE_KEEP_CAPACITY: usize = 4096;

// === impl AccessLog ===

impl AccessLog {
    /// Starts the writer thread (it exits once every `AccessLog` is dropped).
    pub fn start(sink: AccessLogSink, capacity: usize, dropped: Counter) -> std::io::Result<Self> {
        let writer: Box<dyn Write + Send> = match sink {
            AccessLogSink::Disabled => {
                return Ok(Self {
                    queues: None,
                    dropped,
                });
            }
            AccessLogSink::Stdout => Box::new(std::io::stdout()),
            AccessLogSink::Writer(w) => w,
        };
        let queues = Arc::new(LineQueues::new(capacity));
        let reader = Arc::clone(&queues);
        std::thread::Builder::new()
            .name("portico-access-log".into())
            .spawn(move || write_lines(&reader, writer))?;
        Ok(Self {
            queues: Some(queues),
            dropped,
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.queues.is_some()
    }

    /// Never waits: a full queue drops the line and counts it.
    pub fn log(&self, record: &AccessRecord) {
        let Some(q) = &self.queues else { return };
        let mut line = q
            .free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(LINE_CAPACITY));
        record.write_json(&mut line);
        if let Err(line) = q.lines.push(line) {
            self.dropped.inc();
            q.recycle(line);
        }
    }
}

impl LineQueues {
    fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            lines: ArrayQueue::new(capacity),
            // Enough spare buffers for a period's worth at a steady rate;
            // beyond that, a burst allocates and the spares are dropped.
            free: ArrayQueue::new(capacity.min(4096)),
        }
    }

    fn recycle(&self, mut line: Vec<u8>) {
        if line.capacity() <= LINE_KEEP_CAPACITY {
            line.clear();
            let _ = self.free.push(line);
        }
    }
}

fn write_lines(queues: &Arc<LineQueues>, writer: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, writer);
    loop {
        // The last handle gone: write what is left and stop.
        let last_round = Arc::strong_count(queues) == 1;
        let mut wrote = false;
        while let Some(line) = queues.lines.pop() {
            if out.write_all(&line).is_err() {
                return;
            }
            queues.recycle(line);
            wrote = true;
        }
        if wrote && out.flush().is_err() {
            return;
        }
        if last_round {
            return;
        }
        std::thread::sleep(LOG_FLUSH_PERIOD);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for a in [
            "0.0.0.0:0",
            "127.0.0.1:1",
            "10.20.255.3:65535",
            "255.255.255.255:8080",
            "1.22.100.9:9999",
            "9.99.199.200:10000",
            "[::1]:443",
            "[2001:db8::1:0:7]:80",
        ] {
            let addr: SocketAddr = a.parse().unwrap();
            let mut out = Vec::new();
            push_addr(&mut out, addr);
            assert_eq!(String::from_utf8(out).unwrap(), addr.to_string());
        }
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let dropped = Counter::default();
        let log = AccessLog {
            queues: Some(Arc::new(LineQueues::new(1))),
            dropped: dropped.clone(),
        };
        log.log(&record());
        log.log(&record());
        log.log(&record());
        assert_eq!(dropped.get(), 2);
        // The dropped lines' buffers are kept for the next ones.
        assert_eq!(log.queues.as_ref().unwrap().free.len(), 1);
    }

    fn record() -> AccessRecord {
        AccessRecord {
            time: UNIX_EPOCH + Duration::from_millis(1_795_000_000_123),
            request_id: http::HeaderValue::from_static("r"),
            client_addr: "127.0.0.1:1".parse::<SocketAddr>().unwrap().into(),
            method: http::Method::GET,
            host: http::HeaderValue::from_static("h"),
            uri: http::Uri::from_static("/"),
            status: 200,
            bytes_in: 0,
            bytes_out: 0,
            duration: Duration::ZERO,
            upstream_addr: None,
            route: Arc::from("r"),
        }
    }

    fn line(rec: &AccessRecord) -> serde_json::Value {
        let mut out = Vec::new();
        rec.write_json(&mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
        serde_json::from_slice(&out).expect("one valid JSON object")
    }

    #[test]
    fn a_line_is_json_with_every_field() {
        let rec = AccessRecord {
            request_id: http::HeaderValue::from_static("abc-123"),
            client_addr: "[2001:db8::1]:4242".parse::<SocketAddr>().unwrap().into(),
            method: http::Method::from_bytes(b"PURGE").unwrap(),
            host: http::HeaderValue::from_static("example.com:8080"),
            uri: http::Uri::from_static("/a/b%20c?token=secret"),
            status: 503,
            bytes_in: 12,
            bytes_out: 18_446_744_073_709_551_615,
            duration: Duration::from_micros(1_234_567),
            upstream_addr: Some("10.1.2.3:8080".parse().unwrap()),
            route: Arc::from("ingress/default/web/0/0"),
            ..record()
        };
        let v = line(&rec);
        assert_eq!(
            v,
            serde_json::json!({
                "time": "2026-11-18T11:06:40.123Z",
                "request_id": "abc-123",
                "client_addr": "[2001:db8::1]:4242",
                "method": "PURGE",
                "host": "example.com:8080",
                "path": "/a/b%20c",
                "status": 503,
                "bytes_in": 12,
                "bytes_out": 18_446_744_073_709_551_615u64,
                "duration_ms": 1234.567,
                "upstream_addr": "10.1.2.3:8080",
                "route": "ingress/default/web/0/0",
            })
        );
        let v = line(&record());
        assert_eq!(v["upstream_addr"], serde_json::Value::Null);
        assert_eq!(v["duration_ms"], 0.0);
        // An address from X-Forwarded-For, without a port.
        let rec = AccessRecord {
            client_addr: ClientAddr::new("2001:db8::7".parse().unwrap(), None),
            ..record()
        };
        assert_eq!(line(&rec)["client_addr"], "2001:db8::7");
    }

    /// The word-at-a-time check agrees with the byte-at-a-time definition
    /// for every byte value at every place of strings of 0 to 24 bytes.
    #[test]
    fn plain_strings_are_told_from_those_to_escape() {
        let plain_byte = |b: u8| (0x20..0x80).contains(&b) && b != b'"' && b != b'\\';
        for len in 0..=24 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    assert_eq!(is_plain(&s), plain_byte(b), "{b:#x} at {at} of {len}");
                }
            }
            assert!(is_plain(&vec![b'~'; len]));
        }
    }

    #[test]
    fn strings_are_escaped_and_made_utf8() {
        // A header value may hold quotes, backslashes, tabs and obs-text.
        let host = http::HeaderValue::from_bytes(b"a\"b\\c\td\xff\xc3\xa9").unwrap();
        let rec = AccessRecord {
            host,
            route: Arc::from("r\n\u{1}\u{1f}\u{7f}"),
            ..record()
        };
        let v = line(&rec);
        assert_eq!(v["host"], "a\"b\\c\td\u{fffd}\u{e9}");
        assert_eq!(v["route"], "r\n\u{1}\u{1f}\u{7f}");
    }
}
