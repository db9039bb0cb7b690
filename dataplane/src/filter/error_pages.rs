//! Custom error pages (ingress-nginx `custom-http-errors`, `default-backend`,
//! `--default-backend-service`): an answer with a listed status keeps its
//! status and takes its body and content headers from an error backend.
//!
//! The error backend is asked with a body-less `GET` (`HEAD` for a `HEAD`)
//! of `/` carrying ingress-nginx's headers (`X-Code`, `X-Format`,
//! `X-Original-URI`, `X-Namespace`, `X-Ingress-Name`, `X-Service-Name`,
//! `X-Service-Port`, `X-Request-ID`) and nothing else of the client's: no
//! cookies, no credentials, no body. Its answer is used when it is a success
//! or carries the asked-for status (what ingress-nginx's custom-error-pages
//! backend answers); anything else, or no answer, leaves the original answer
//! as it was. The page itself is never intercepted again, so there is no
//! loop. Only the head of an intercepted upstream answer has been read: its
//! body is read off and dropped in the background (bounded), which hands
//! its connection back to the pool, or closes it if the body is long.

use std::net::IpAddr;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use tokio::time::Instant;
use tracing::debug;

use crate::balance::retry::{self, Sent, Timing};
use crate::balance::{BackendRuntime, BackendSet};
use crate::body::{RequestBody, ResponseBody};
use crate::headers::{X_FORWARDED_FOR, X_REQUEST_ID};
use crate::model::{self, Backend, ErrorOrigin, Protocol, RetryPolicy, Timeouts};
use crate::upstream::Upstreams;

static X_CODE: HeaderName = HeaderName::from_static("x-code");
static X_FORMAT: HeaderName = HeaderName::from_static("x-format");
static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
static X_NAMESPACE: HeaderName = HeaderName::from_static("x-namespace");
static X_INGRESS_NAME: HeaderName = HeaderName::from_static("x-ingress-name");
static X_SERVICE_NAME: HeaderName = HeaderName::from_static("x-service-name");
static X_SERVICE_PORT: HeaderName = HeaderName::from_static("x-service-port");

/// The page's headers that describe its body, copied onto the answer. The
/// page varies by `Accept` (`X-Format`), which caches must know.
const CONTENT_HEADERS: [HeaderName; 6] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    header::CACHE_CONTROL,
    header::VARY,
];

/// At most this much of an intercepted upstream body is read and dropped
/// to keep its connection, within [`DISCARD_TIME`]; past either, the
/// connection is closed instead.
const DISCARD_BYTES: usize = 64 * 1024;
const DISCARD_TIME: Duration = Duration::from_secs(1);

/// Statuses 400 to 655 as bits: a lookup is a shift and a mask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct CodeSet([u64; 4]);

impl CodeSet {
    const BASE: u16 = 400;

    fn of(codes: &[u16]) -> Self {
        let mut set = Self::default();
        for &code in codes {
            if let Some(bit) = code.checked_sub(Self::BASE).filter(|b| *b < 256) {
                set.0[usize::from(bit / 64)] |= 1 << (bit % 64);
            }
        }
        set
    }

    fn contains(&self, status: StatusCode) -> bool {
        status
            .as_u16()
            .checked_sub(Self::BASE)
            .filter(|b| *b < 256)
            .is_some_and(|bit| self.0[usize::from(bit / 64)] & (1 << (bit % 64)) != 0)
    }
}

/// A [`model::ErrorPages`] compiled: the error backend's endpoints resolved
/// and the headers that describe the rule formatted, once per table build.
pub struct ErrorPagesRuntime {
    codes: CodeSet,
    intercept_upstream: bool,
    backend: BackendSet,
    /// `X-Namespace` and friends, those that are not empty.
    origin: Box<[(HeaderName, HeaderValue)]>,
    timeouts: Timeouts,
}

/// What the error backend is told about the request, taken before the
/// request is consumed; only for rules with error pages. Handles to the
/// request's own buffers: formatted only when a page is asked for.
pub(crate) struct ErrorRequest {
    head: bool,
    /// As routed: `X-Original-URI`, and the host of an HTTP/2 request.
    uri: Uri,
    /// The `Host` header of an HTTP/1 request.
    host: Option<HeaderValue>,
    /// `X-Format`: the client's `Accept`.
    accept: Option<HeaderValue>,
}

impl ErrorRequest {
    pub(crate) fn of(req: &Request<Incoming>) -> Self {
        Self {
            head: req.method() == Method::HEAD,
            uri: req.uri().clone(),
            host: req.headers().get(header::HOST).cloned(),
            accept: req.headers().get(header::ACCEPT).cloned(),
        }
    }

    /// The host the client asked for, as the proxy routed it.
    fn host(&self) -> HeaderValue {
        match self.uri.authority() {
            // An authority is always a valid header value.
            Some(a) => HeaderValue::from_str(a.as_str()).unwrap_or(HeaderValue::from_static("")),
            None => self.host.clone().unwrap_or(HeaderValue::from_static("")),
        }
    }
}

/// The request a page is asked for on behalf of.
pub(crate) struct Asker<'a> {
    pub id: &'a HeaderValue,
    pub client: IpAddr,
}

// === impl ErrorPagesRuntime ===

impl ErrorPagesRuntime {
    pub(crate) fn build(
        pages: &model::ErrorPages,
        timeouts: Timeouts,
        upstreams: &Upstreams,
    ) -> Self {
        let origin = origin_headers(&pages.origin);
        Self {
            codes: CodeSet::of(&pages.codes),
            intercept_upstream: pages.intercept_upstream,
            backend: backend_set(&pages.backend, upstreams),
            origin,
            timeouts,
        }
    }

    /// The default backend of requests no route matches: it renders the
    /// proxy's 404.
    pub(crate) fn unmatched(backend: &Backend, upstreams: &Upstreams) -> Self {
        Self {
            codes: CodeSet::of(&[StatusCode::NOT_FOUND.as_u16()]),
            intercept_upstream: false,
            backend: backend_set(backend, upstreams),
            origin: Box::default(),
            timeouts: Timeouts::default(),
        }
    }

    /// Whether `rsp` gets a page: its status is listed, and it is the
    /// proxy's own or upstream answers are intercepted too.
    pub(crate) fn intercepts(&self, rsp: &Response<ResponseBody>) -> bool {
        self.codes.contains(rsp.status()) && (self.intercept_upstream || !rsp.body().is_upstream())
    }

    /// The error backend's endpoints, for health reports.
    pub(crate) fn backends(&self) -> impl Iterator<Item = &BackendRuntime> {
        self.backend.backends()
    }

    /// `original` with the page's body and content headers, or `original`
    /// unchanged when no page comes.
    pub(crate) async fn render(
        &self,
        req: &ErrorRequest,
        asker: Asker<'_>,
        original: Response<ResponseBody>,
    ) -> Response<ResponseBody> {
        let status = original.status();
        let Ok(backend) = self.backend.pick_backend() else {
            debug!(status = status.as_u16(), "error backend has no endpoints");
            return original;
        };
        let Some(request) = self.request(req, &asker, status, backend.protocol) else {
            return original;
        };
        let timing = Timing {
            start: Instant::now(),
            wait: self.timeouts.read,
            connect: self.timeouts.connect,
        };
        let sent = retry::send_own(backend, Box::new(request), timing).await;
        let Sent {
            rsp,
            recycle,
            in_flight,
            addr,
            ..
        } = match sent {
            Ok(sent) => sent,
            Err(_) => {
                debug!(backend = %backend.name, "error backend did not answer; original answer kept");
                return original;
            }
        };
        let page_status = rsp.status();
        if !(page_status.is_success() || page_status == status) {
            debug!(upstream.addr = %addr, status = page_status.as_u16(), "error backend answered an error; original answer kept");
            return original;
        }
        let (page, page_body) = rsp.into_parts();
        let (parts, body) = original.into_parts();
        // The upstream's answer is replaced whole, as nginx does; the
        // proxy's own headers (request id, `Connection: close`, a
        // challenge) stay.
        let mut headers = if body.is_upstream() {
            HeaderMap::new()
        } else {
            let mut h = parts.headers;
            for name in &CONTENT_HEADERS {
                h.remove(name);
            }
            h
        };
        discard(body);
        for name in &CONTENT_HEADERS {
            for v in page.headers.get_all(name) {
                headers.append(name.clone(), v.clone());
            }
        }
        let body =
            ResponseBody::upstream(page_body, self.timeouts.read, None, recycle).holding(in_flight);
        let mut rsp = Response::new(body);
        *rsp.status_mut() = status;
        *rsp.headers_mut() = headers;
        rsp
    }

    /// The request to the error backend: `/`, no body.
    fn request(
        &self,
        req: &ErrorRequest,
        asker: &Asker<'_>,
        status: StatusCode,
        protocol: Protocol,
    ) -> Option<Request<RequestBody>> {
        let mut out = Request::new(RequestBody::empty());
        *out.method_mut() = if req.head { Method::HEAD } else { Method::GET };
        let h = out.headers_mut();
        h.reserve(10 + self.origin.len());
        h.insert(X_CODE.clone(), HeaderValue::from(status.as_u16()));
        if let Some(accept) = &req.accept {
            h.insert(X_FORMAT.clone(), accept.clone());
        }
        if let Some(uri) = req
            .uri
            .path_and_query()
            .and_then(|pq| HeaderValue::from_str(pq.as_str()).ok())
        {
            h.insert(X_ORIGINAL_URI.clone(), uri);
        }
        let host = req.host();
        for (name, value) in self.origin.iter() {
            h.insert(name.clone(), value.clone());
        }
        let mut id = asker.id.clone();
        // As the request id goes upstream: never indexed by HPACK.
        id.set_sensitive(true);
        h.insert(X_REQUEST_ID.clone(), id);
        if let Ok(ip) = HeaderValue::try_from(asker.client.to_string()) {
            h.insert(X_FORWARDED_FOR.clone(), ip);
        }
        let root = PathAndQuery::from_static("/");
        match protocol {
            Protocol::Http1 => {
                h.insert(header::HOST, host);
                *out.version_mut() = Version::HTTP_11;
                *out.uri_mut() = Uri::from(root);
            }
            Protocol::H2c => {
                *out.version_mut() = Version::HTTP_2;
                let authority = Authority::try_from(host.as_bytes())
                    .unwrap_or_else(|_| Authority::from_static("localhost"));
                *out.uri_mut() = Uri::builder()
                    .scheme("http")
                    .authority(authority)
                    .path_and_query(root)
                    .build()
                    .ok()?;
            }
        }
        Some(out)
    }
}

/// The error backend alone, whatever weight it was given; also external
/// auth's in-cluster service.
pub(crate) fn backend_set(backend: &Backend, upstreams: &Upstreams) -> BackendSet {
    let one = Backend {
        weight: 1,
        ..backend.clone()
    };
    BackendSet::build(
        std::slice::from_ref(&one),
        upstreams,
        None,
        &RetryPolicy::default(),
        crate::balance::SessionSide::Mainline,
    )
}

fn origin_headers(o: &ErrorOrigin) -> Box<[(HeaderName, HeaderValue)]> {
    [
        (&X_NAMESPACE, &o.namespace),
        (&X_INGRESS_NAME, &o.ingress),
        (&X_SERVICE_NAME, &o.service),
        (&X_SERVICE_PORT, &o.port),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    // Kubernetes names and port names: always valid header values; one
    // that is not (a hand-written table) is left out.
    .filter_map(|(n, v)| Some((n.clone(), HeaderValue::from_str(v).ok()?)))
    .collect()
}

/// Reads the rest of an intercepted upstream body off the request path and
/// drops it: a body read to its end hands its connection back to the pool
/// (see [`ResponseBody`]'s drop); one cut short closes it.
fn discard(body: ResponseBody) {
    if !body.is_upstream() || body.is_end_stream() {
        return;
    }
    tokio::spawn(drain(body));
}

/// Reads an answer's body off and drops it, up to [`DISCARD_BYTES`] within
/// [`DISCARD_TIME`]: read to its end, the connection goes back to the
/// pool; cut short, it is closed. Also a mirrored copy's answer.
pub(crate) async fn drain(mut body: ResponseBody) {
    let read = async {
        let mut left = DISCARD_BYTES;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                let Some(rest) = left.checked_sub(data.len()) else {
                    return;
                };
                left = rest;
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIME, read).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_set_holds_exactly_its_codes() {
        let set = CodeSet::of(&[400, 404, 463, 464, 503, 599, 399, 656, 0]);
        let status = |c| StatusCode::from_u16(c).unwrap();
        for c in [400, 404, 463, 464, 503, 599] {
            assert!(set.contains(status(c)), "{c}");
        }
        for c in [
            200, 399, 401, 405, 462, 465, 500, 502, 598, 600, 655, 656, 999,
        ] {
            assert!(!set.contains(status(c)), "{c}");
        }
        assert!(!CodeSet::default().contains(status(404)));
    }

    #[test]
    fn origin_headers_leave_out_empty_fields() {
        let h = origin_headers(&ErrorOrigin {
            namespace: "shop".into(),
            ingress: "web".into(),
            service: String::new(),
            port: "http".into(),
        });
        let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-namespace", "x-ingress-name", "x-service-port"]);
    }
}
