//! An upstream response's body, whichever client read it.
//!
//! One type for every upstream protocol, so the proxy's response path
//! (`ResponseBody`, retries, error pages, mirrors, external auth) is written
//! once. Each client adds its variant here; matching on it costs a branch
//! per frame.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::upstream::h1::{self, H1Body};
use crate::upstream::h2::H2Body;

/// The body of an upstream's response.
#[derive(Debug)]
pub enum UpstreamBody {
    /// Read by one of hyper's clients.
    Hyper(Incoming),
    /// Read by Portico's own HTTP/1.1 client.
    H1(H1Body),
    /// Read by our HTTP/2 client ([`crate::upstream::h2`]).
    H2(H2Body),
}

/// Why an upstream's response body failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamBodyError {
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    /// Boxed: `h1::Error` carries a request's `BodyError`, which carries
    /// this.
    #[error(transparent)]
    H1(Box<h1::Error>),
    #[error(transparent)]
    H2(#[from] h2::Error),
}

impl From<Incoming> for UpstreamBody {
    fn from(body: Incoming) -> Self {
        UpstreamBody::Hyper(body)
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamBodyError>>> {
        match self.get_mut() {
            UpstreamBody::Hyper(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(UpstreamBodyError::Hyper))),
            UpstreamBody::H1(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|e| UpstreamBodyError::H1(Box::new(e))))),
            UpstreamBody::H2(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(UpstreamBodyError::H2))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Hyper(b) => b.is_end_stream(),
            UpstreamBody::H1(b) => b.is_end_stream(),
            UpstreamBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Hyper(b) => b.size_hint(),
            UpstreamBody::H1(b) => b.size_hint(),
            UpstreamBody::H2(b) => b.size_hint(),
        }
    }
}
