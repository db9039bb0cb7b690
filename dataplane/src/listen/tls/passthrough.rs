//! TLS passthrough (ingress-nginx `ssl-passthrough`): for chosen hosts the
//! HTTPS listener reads the SNI from the ClientHello and splices the raw TCP
//! stream to a backend without terminating TLS; other hosts on the same port
//! are terminated as usual.
//!
//! The ClientHello is read (not peeked, which would spin on a partial
//! record) and parsed by rustls itself; the bytes are then replayed, to the
//! backend or to the local TLS handshake, by [`Rewind`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tracing::debug;

use crate::model::Hostname;

/// A ClientHello larger than this is refused (rustls caps a hello's size
/// well below it).
const MAX_HELLO: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Hosts whose TLS connections go, undecrypted, to these endpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct PassthroughBinding {
    /// Bounded identifier for logs, e.g. `default/web:443`.
    pub name: String,
    pub hosts: Vec<Hostname>,
    pub endpoints: Vec<SocketAddr>,
}

/// A binding made servable: endpoints taken round robin.
pub(crate) struct PassthroughTarget {
    name: String,
    endpoints: Vec<SocketAddr>,
    next: AtomicUsize,
}

impl PassthroughTarget {
    pub(crate) fn new(b: &PassthroughBinding) -> Self {
        Self {
            name: b.name.clone(),
            endpoints: b.endpoints.clone(),
            next: AtomicUsize::new(0),
        }
    }

    /// Connects to the next endpoint, replays the ClientHello and splices
    /// both ways until either side closes.
    pub(crate) async fn splice(&self, mut client: Rewind<TcpStream>) {
        let Some(n) = (!self.endpoints.is_empty())
            .then(|| self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len())
        else {
            debug!(passthrough = %self.name, "no endpoints; closing");
            return;
        };
        let addr = self.endpoints[n];
        let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                debug!(passthrough = %self.name, upstream.addr = %addr, error = %e, "connect failed");
                return;
            }
            Err(_) => {
                debug!(passthrough = %self.name, upstream.addr = %addr, "connect timed out");
                return;
            }
        };
        let _ = upstream.set_nodelay(true);
        let mut upstream = upstream;
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            debug!(passthrough = %self.name, upstream.addr = %addr, error = %e, "passthrough ended");
        }
        let _ = upstream.shutdown().await;
    }
}

/// Reads a whole ClientHello and returns its bytes and SNI. A hello rustls
/// cannot parse yields no SNI (the local handshake will refuse it with the
/// proper alert). `first`: bytes of it already read (after a PROXY
/// protocol header).
pub(crate) async fn read_client_hello(
    stream: &mut TcpStream,
    first: Bytes,
) -> io::Result<(Bytes, Option<String>)> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut seen = Vec::with_capacity(1024.max(first.len()));
    seen.extend_from_slice(&first);
    let mut fed = 0;
    let mut chunk = [0u8; 4096];
    loop {
        if fed == seen.len() {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            seen.extend_from_slice(&chunk[..n]);
        }
        let mut fresh = &seen[fed..];
        let mut unreadable = false;
        while !fresh.is_empty() && !unreadable {
            unreadable = acceptor.read_tls(&mut fresh).is_err();
        }
        if unreadable {
            return Ok((Bytes::from(seen), None));
        }
        fed = seen.len();
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let sni = accepted.client_hello().server_name().map(str::to_owned);
                return Ok((Bytes::from(seen), sni));
            }
            Ok(None) if seen.len() < MAX_HELLO => {}
            Ok(None) | Err(_) => return Ok((Bytes::from(seen), None)),
        }
    }
}

/// A stream that first yields bytes already read from it.
pub(crate) struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub(crate) fn new(prefix: Bytes, inner: S) -> Self {
        Self { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    // hyper writes a response head and body in one vectored write where
    // the stream can; without these it would copy them together first.
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
