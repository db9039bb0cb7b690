//! A small browser for sign-in flows: follows redirects, keeps cookies per
//! host, submits forms. Host names map to the loopback address that serves
//! them (as `/etc/hosts` would), so `http://app.e2e.test/...` reaches the
//! proxy with that `Host` while the identity provider is reached at its own
//! `127.0.0.1` address.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use url::Url;

/// One answer, with the URL that gave it.
#[derive(Debug)]
pub struct Page {
    pub url: Url,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    /// The `Location` header resolved against this page's URL.
    pub fn location(&self) -> Option<Url> {
        let loc = self.headers.get(header::LOCATION)?.to_str().ok()?;
        self.url.join(loc).ok()
    }

    /// The first `<form>`'s action, resolved against this page's URL (HTML
    /// entities in the attribute decoded as a browser would, for the ones
    /// template engines write: `&amp;`, `&#43;`, ...).
    pub fn form_action(&self) -> anyhow::Result<Url> {
        let form = self.body.find("<form").context("no <form> on the page")?;
        let rest = &self.body[form..];
        let end = rest.find('>').context("unterminated <form>")?;
        let tag = &rest[..end];
        let action = tag
            .split("action=\"")
            .nth(1)
            .and_then(|a| a.split('"').next())
            .unwrap_or("");
        Ok(self.url.join(&unescape_html(action))?)
    }
}

fn unescape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(semi) = rest.find(';') else { break };
        let entity = &rest[1..semi];
        let ch = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

pub struct Browser {
    client: Client<HttpConnector, Full<Bytes>>,
    hosts: HashMap<String, SocketAddr>,
    /// host → cookie name → value. Path, expiry and `Secure` are not
    /// modelled; an empty value (how servers clear a cookie) removes it.
    cookies: HashMap<String, BTreeMap<String, String>>,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            hosts: HashMap::new(),
            cookies: HashMap::new(),
        }
    }

    /// Requests for `host` (any port) connect to `addr`.
    pub fn resolve(&mut self, host: &str, addr: SocketAddr) {
        self.hosts.insert(host.to_owned(), addr);
    }

    /// The cookie `name` held for `host`.
    pub fn cookie(&self, host: &str, name: &str) -> Option<&str> {
        self.cookies.get(host)?.get(name).map(String::as_str)
    }

    /// One request, no redirect followed; cookies sent and stored.
    pub async fn send(
        &mut self,
        method: Method,
        url: &Url,
        form: Option<&[(&str, &str)]>,
    ) -> anyhow::Result<Page> {
        self.send_with(method, url, form, &[]).await
    }

    /// [`Self::send`] with extra request headers.
    pub async fn send_with(
        &mut self,
        method: Method,
        url: &Url,
        form: Option<&[(&str, &str)]>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Page> {
        if url.scheme() != "http" {
            bail!("{url}: only http is spoken here");
        }
        let host = url.host_str().context("URL without host")?.to_owned();
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let connect = match self.hosts.get(&host) {
            Some(addr) => addr.to_string(),
            None => authority.clone(),
        };
        let path = &url[url::Position::BeforePath..url::Position::AfterQuery];
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{connect}{path}"))
            .header(header::HOST, &authority);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(jar) = self.cookies.get(&host).filter(|j| !j.is_empty()) {
            let line: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header(header::COOKIE, line.join("; "));
        }
        let body = match form {
            Some(fields) => {
                req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(fields)
                    .finish()
            }
            None => String::new(),
        };
        let resp = self
            .client
            .request(req.body(Full::new(Bytes::from(body)))?)
            .await
            .with_context(|| format!("request to {url}"))?;
        let jar = self.cookies.entry(host).or_default();
        for set in resp.headers().get_all(header::SET_COOKIE) {
            let Some((name, value)) = set
                .to_str()
                .ok()
                .and_then(|s| s.split(';').next())
                .and_then(|pair| pair.split_once('='))
            else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            if value.is_empty() {
                jar.remove(name);
            } else {
                jar.insert(name.to_owned(), value.to_owned());
            }
        }
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Page {
            url: url.clone(),
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// GETs `url` and follows redirects (at most 10), as a browser does
    /// after a form post too: every page on the way, the last one last.
    pub async fn follow(&mut self, url: &Url) -> anyhow::Result<Vec<Page>> {
        let first = self.send(Method::GET, url, None).await?;
        self.follow_from(first).await
    }

    /// Posts the form fields to `url` and follows the redirects that
    /// answer it.
    pub async fn submit(
        &mut self,
        url: &Url,
        fields: &[(&str, &str)],
    ) -> anyhow::Result<Vec<Page>> {
        let first = self.send(Method::POST, url, Some(fields)).await?;
        self.follow_from(first).await
    }

    async fn follow_from(&mut self, first: Page) -> anyhow::Result<Vec<Page>> {
        let mut pages = vec![first];
        for _ in 0..10 {
            let last = pages.last().context("no page")?;
            if !last.status.is_redirection() {
                return Ok(pages);
            }
            let next = last.location().with_context(|| {
                format!(
                    "{} from {} without a usable Location",
                    last.status, last.url
                )
            })?;
            pages.push(self.send(Method::GET, &next, None).await?);
        }
        bail!(
            "more than 10 redirects: {:?}",
            pages.iter().map(|p| p.url.as_str()).collect::<Vec<_>>()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::unescape_html;

    #[test]
    fn entities_in_attributes() {
        assert_eq!(
            unescape_html("/a?b=1&amp;c=2&#43;&#x2F;&bogus;"),
            "/a?b=1&c=2+/&bogus;"
        );
    }
}
