//! Request-path normalisation, once, before routing.
//!
//! The proxy routes on the normalised path and sends that same path
//! upstream (as Envoy does), so a backend never resolves a path the proxy
//! did not match: `/public/../admin` is `/admin` to both, `//public` and
//! `/%70ublic` are `/public` to both. RFC 3986 §6.2.2 normalisation plus
//! refusals of the forms backends read differently:
//!
//! - percent-encoded unreserved characters (ALPHA DIGIT `-._~`) are
//!   decoded; every other escape keeps its encoding with upper-case hex;
//! - `.` and `..` segments are resolved, including those that only appear
//!   after decoding (`%2e%2E`); a `..` above the root is refused;
//! - repeated slashes are merged (nginx `merge_slashes on`), optionally;
//! - `%2F` and `%5C` are kept, refused or decoded to `/` ([`EscapedSlashes`]);
//!   when kept, a segment that would be a dot segment once they are
//!   decoded (`..%2F`, `%5C..`) is refused;
//! - refused: a raw `\` (Windows and IIS backends read it as `/`), a dot
//!   segment with a path parameter (`..;x`, which Tomcat and Spring read
//!   as `..`), encoded control characters (`%00`-`%1F`, `%7F`), invalid
//!   escapes, and escapes whose bytes are not UTF-8 (overlong `%C0%AE`).
//!
//! Other `;` parameters stay part of their segment; the proxy checks that
//! the path without them routes the same way ([`without_parameters`]).
//!
//! A path with nothing to normalise (no `%`, no `\`, no `//`, no dot
//! segment: nearly all of them) costs one scan and no allocation.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

use crate::headers::hex;

/// How request paths are normalised (`--path-normalization`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PathNormalization {
    /// RFC 3986 §6.2.2 plus the refusals in the module documentation.
    #[default]
    Rfc3986,
    /// Route on the path as sent and forward it unchanged.
    None,
}

/// What `%2F` and `%5C` in a path do (`--escaped-slashes`; Envoy's
/// `path_with_escaped_slashes_action`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// Kept encoded (upper-case), inside their segment.
    #[default]
    Keep,
    /// The request is refused (400).
    Reject,
    /// Both become `/` (a Windows backend reads a backslash as a slash)
    /// before segments are resolved.
    Decode,
}

/// The path rules of a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathPolicy {
    pub normalization: PathNormalization,
    /// Merge repeated slashes (nginx `merge_slashes`).
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathPolicy {
    fn default() -> Self {
        Self {
            normalization: PathNormalization::Rfc3986,
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Keep,
        }
    }
}

/// Why a path was refused (400).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("invalid percent-escape in the path")]
    InvalidEscape,
    #[error("percent-encoded control character %{0:02X} in the path")]
    EncodedControl(u8),
    #[error("percent-encoded bytes in the path are not UTF-8")]
    NotUtf8,
    #[error("`..` segment above the root of the path")]
    AboveRoot,
    #[error("backslash in the path")]
    Backslash,
    #[error("percent-encoded slash or backslash in the path")]
    EscapedSlash,
    #[error("dot segment behind a percent-encoded slash or backslash in the path")]
    HiddenDotSegment,
    #[error("path parameter on a dot segment (`..;`) in the path")]
    DotSegmentParameter,
    /// Found by the proxy, which knows the routes: see
    /// [`without_parameters`].
    #[error("the path routes to another rule without its `;` parameters")]
    ParametersChangeRoute,
}

/// `path` normalised under `policy`: borrowed when there was nothing to
/// do. A path that does not start with `/` (`*` of `OPTIONS *`) is left as
/// it is.
pub fn normalize(path: &str, policy: PathPolicy) -> Result<Cow<'_, str>, PathError> {
    if policy.normalization == PathNormalization::None
        || !path.starts_with('/')
        || is_normal(path.as_bytes(), policy.merge_slashes)
    {
        return Ok(Cow::Borrowed(path));
    }
    let decoded;
    let path = if policy.escaped_slashes == EscapedSlashes::Decode {
        decoded = decode_escaped_slashes(path);
        &*decoded
    } else {
        path
    };
    let mut out = String::with_capacity(path.len());
    let mut check_utf8 = false;
    let mut segments = path[1..].split('/').peekable();
    while let Some(raw) = segments.next() {
        let last = segments.peek().is_none();
        let start = out.len();
        out.push('/');
        let escaped_slash = decode_segment(raw, policy.escaped_slashes, &mut out, &mut check_utf8)?;
        match &out[start + 1..] {
            "." => {
                out.truncate(start);
                if last {
                    out.push('/');
                }
            }
            ".." => {
                out.truncate(start);
                let parent = out.rfind('/').ok_or(PathError::AboveRoot)?;
                out.truncate(parent);
                if last {
                    out.push('/');
                }
            }
            "" if policy.merge_slashes && !last => out.truncate(start),
            s if is_dot_with_parameter(s) => return Err(PathError::DotSegmentParameter),
            s if escaped_slash && hides_dot_segment(s) => return Err(PathError::HiddenDotSegment),
            _ => {}
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    // Only escapes of bytes above 0x7F can break UTF-8: the raw part of a
    // request target is already checked by the URI parser.
    if check_utf8 && percent_decode_str(&out).decode_utf8().is_err() {
        return Err(PathError::NotUtf8);
    }
    Ok(Cow::Owned(out))
}

/// `path` with the `;` parameters of every segment removed (`/a;x/b` →
/// `/a/b`), as Tomcat and Spring read it; `None` when it has none.
pub fn without_parameters(path: &str) -> Option<String> {
    if !path.contains(';') {
        return None;
    }
    let mut out = String::with_capacity(path.len());
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(segment.split_once(';').map_or(segment, |(s, _)| s));
    }
    Some(out)
}

/// The fast path: whether there is nothing to normalise.
fn is_normal(p: &[u8], merge_slashes: bool) -> bool {
    for (i, &b) in p.iter().enumerate() {
        match b {
            b'%' | b'\\' => return false,
            b'/' => match p.get(i + 1) {
                Some(b'/') if merge_slashes => return false,
                Some(b'.') => {
                    let rest = &p[i + 2..];
                    let rest = rest.strip_prefix(b".").unwrap_or(rest);
                    if matches!(rest.first(), None | Some(b'/' | b';')) {
                        return false;
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }
    true
}

/// Appends one segment to `out` with its escapes normalised; whether it
/// kept an encoded slash or backslash.
fn decode_segment(
    raw: &str,
    escaped_slashes: EscapedSlashes,
    out: &mut String,
    check_utf8: &mut bool,
) -> Result<bool, PathError> {
    let bytes = raw.as_bytes();
    let mut escaped_slash = false;
    let mut i = 0;
    while i < bytes.len() {
        // Runs without escapes are copied whole; `%` and `\` are ASCII, so
        // the slice ends on a character boundary.
        let run = bytes[i..]
            .iter()
            .position(|b| matches!(b, b'%' | b'\\'))
            .map_or(bytes.len(), |n| i + n);
        out.push_str(&raw[i..run]);
        i = run;
        match bytes.get(i) {
            None => break,
            Some(b'\\') => return Err(PathError::Backslash),
            Some(_) => {}
        }
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).and_then(|b| hex(*b)),
            bytes.get(i + 2).and_then(|b| hex(*b)),
        ) else {
            return Err(PathError::InvalidEscape);
        };
        let byte = hi << 4 | lo;
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(byte));
            }
            0x00..=0x1F | 0x7F => return Err(PathError::EncodedControl(byte)),
            b'/' | b'\\' => {
                if escaped_slashes == EscapedSlashes::Reject {
                    return Err(PathError::EscapedSlash);
                }
                escaped_slash = true;
                push_escape(out, byte);
            }
            _ => {
                *check_utf8 |= byte > 0x7F;
                push_escape(out, byte);
            }
        }
        i += 3;
    }
    Ok(escaped_slash)
}

fn push_escape(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(byte >> 4)]));
    out.push(char::from(HEX[usize::from(byte & 0xf)]));
}

/// `..;x` and `.;x`: a dot segment to Tomcat and Spring.
fn is_dot_with_parameter(segment: &str) -> bool {
    segment.starts_with(".;") || segment.starts_with("..;")
}

/// Whether a segment holding `%2F` or `%5C` (upper-case by now) has a dot
/// segment among its pieces, as a backend that decodes them would see.
fn hides_dot_segment(segment: &str) -> bool {
    segment
        .split("%2F")
        .flat_map(|piece| piece.split("%5C"))
        .any(|piece| matches!(piece, "." | "..") || is_dot_with_parameter(piece))
}

/// `%2F` and `%5C` (either case) replaced by `/`.
fn decode_escaped_slashes(path: &str) -> Cow<'_, str> {
    let bytes = path.as_bytes();
    let is_slash_at = |i: usize| {
        bytes[i] == b'%'
            && matches!(
                (bytes.get(i + 1), bytes.get(i + 2)),
                (Some(b'2'), Some(b'f' | b'F')) | (Some(b'5'), Some(b'c' | b'C'))
            )
    };
    if !(0..bytes.len()).any(is_slash_at) {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        if is_slash_at(i) {
            out.push_str(&path[copied..i]);
            out.push('/');
            i += 3;
            copied = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&path[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: PathPolicy = PathPolicy {
        normalization: PathNormalization::Rfc3986,
        merge_slashes: true,
        escaped_slashes: EscapedSlashes::Keep,
    };

    fn check(policy: PathPolicy, cases: &[(&str, Result<&str, PathError>)]) {
        for (path, want) in cases {
            let got = normalize(path, policy);
            assert_eq!(got.as_deref().map_err(|e| *e), *want, "{path:?}");
        }
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for path in [
            "/",
            "/a",
            "/a/b/",
            "/a.b/c..d/.e/..f/e.",
            "/a;b=c",
            "/a/b?",
            "*",
            "/~u/x-y_z",
            "/é",
        ] {
            assert!(
                matches!(normalize(path, DEFAULT), Ok(Cow::Borrowed(p)) if p == path),
                "{path:?}"
            );
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_upper_cased() {
        use PathError::*;
        check(
            DEFAULT,
            &[
                ("/%70ublic", Ok("/public")),
                ("/%41%5a%61%7A%30%39%2D%2E%5F%7E", Ok("/AZaz09-._~")),
                ("/a%20b", Ok("/a%20b")),
                ("/a%3f%23%25", Ok("/a%3F%23%25")),
                ("/%c3%a9", Ok("/%C3%A9")),
                // Double encoding stays one layer deep.
                ("/%252e%252e/admin", Ok("/%252e%252e/admin")),
                ("/a%", Err(InvalidEscape)),
                ("/a%4", Err(InvalidEscape)),
                ("/a%zz", Err(InvalidEscape)),
                ("/a%%41", Err(InvalidEscape)),
            ],
        );
    }

    #[test]
    fn dot_segments_are_resolved() {
        use PathError::*;
        check(
            DEFAULT,
            &[
                ("/public/../admin", Ok("/admin")),
                ("/public/./admin", Ok("/public/admin")),
                ("/a/b/..", Ok("/a/")),
                ("/a/b/.", Ok("/a/b/")),
                ("/a/b/../", Ok("/a/")),
                ("/.", Ok("/")),
                ("/a/..", Ok("/")),
                ("/public/%2e%2E/admin", Ok("/admin")),
                ("/public/.%2e/admin", Ok("/admin")),
                ("/public/%2E/admin", Ok("/public/admin")),
                ("/..", Err(AboveRoot)),
                ("/a/../..", Err(AboveRoot)),
                ("/%2e%2e/etc/passwd", Err(AboveRoot)),
                ("/a/.../b", Ok("/a/.../b")),
                ("/a/..b/.c", Ok("/a/..b/.c")),
            ],
        );
    }

    #[test]
    fn slashes_are_merged_unless_turned_off() {
        check(
            DEFAULT,
            &[
                ("//public", Ok("/public")),
                ("/a///b//", Ok("/a/b/")),
                ("//", Ok("/")),
                ("/a//../b", Ok("/b")),
            ],
        );
        let keep = PathPolicy {
            merge_slashes: false,
            ..DEFAULT
        };
        assert!(matches!(normalize("//public", keep), Ok(Cow::Borrowed(_))));
        check(keep, &[("/a//../b", Ok("/a/b")), ("//a/./b", Ok("//a/b"))]);
    }

    #[test]
    fn control_characters_and_bad_utf8_are_refused() {
        use PathError::*;
        check(
            DEFAULT,
            &[
                ("/a%00", Err(EncodedControl(0))),
                ("/a%0d%0a", Err(EncodedControl(0x0D))),
                ("/a%1F", Err(EncodedControl(0x1F))),
                ("/a%7f", Err(EncodedControl(0x7F))),
                ("/%C0%AE%C0%AE/admin", Err(NotUtf8)),
                ("/%C3", Err(NotUtf8)),
                ("/%FF", Err(NotUtf8)),
                ("/%E2%82%AC", Ok("/%E2%82%AC")),
            ],
        );
    }

    #[test]
    fn backslashes_and_dot_parameters_are_refused() {
        use PathError::*;
        check(
            DEFAULT,
            &[
                ("/public\\..\\admin", Err(Backslash)),
                ("/a\\b", Err(Backslash)),
                ("/public/..;/admin", Err(DotSegmentParameter)),
                ("/public/.;x/admin", Err(DotSegmentParameter)),
                ("/public/%2e%2e;/admin", Err(DotSegmentParameter)),
                ("/a;x/b;y", Ok("/a;x/b;y")),
            ],
        );
        // `;` alone does not leave the fast path.
        assert!(matches!(
            normalize("/app;jsessionid=1", DEFAULT),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn escaped_slashes_follow_the_policy() {
        use PathError::*;
        check(
            DEFAULT,
            &[
                ("/a%2fb", Ok("/a%2Fb")),
                ("/a%5cb", Ok("/a%5Cb")),
                ("/public/..%2Fadmin", Err(HiddenDotSegment)),
                ("/public/..%5cadmin", Err(HiddenDotSegment)),
                ("/public%2F..", Err(HiddenDotSegment)),
                ("/public/%2e%2e%2fadmin", Err(HiddenDotSegment)),
                ("/public/x%2F..;%2Fadmin", Err(HiddenDotSegment)),
                ("/a%2F...", Ok("/a%2F...")),
            ],
        );
        let reject = PathPolicy {
            escaped_slashes: EscapedSlashes::Reject,
            ..DEFAULT
        };
        check(
            reject,
            &[
                ("/a%2fb", Err(EscapedSlash)),
                ("/a%5Cb", Err(EscapedSlash)),
                ("/a%41", Ok("/aA")),
            ],
        );
        let decode = PathPolicy {
            escaped_slashes: EscapedSlashes::Decode,
            ..DEFAULT
        };
        check(
            decode,
            &[
                ("/a%2fb", Ok("/a/b")),
                ("/a%5Cb", Ok("/a/b")),
                ("/public/..%2Fadmin", Ok("/admin")),
                ("/a/b%2F..%5C..", Ok("/")),
                ("/public%2F%2F..%5C..", Err(AboveRoot)),
                ("/%2F..%2F..", Err(AboveRoot)),
            ],
        );
    }

    #[test]
    fn none_leaves_every_path_alone() {
        let none = PathPolicy {
            normalization: PathNormalization::None,
            ..DEFAULT
        };
        for path in ["/public/../admin", "//a", "/%00", "/a\\b", "/.."] {
            assert!(
                matches!(normalize(path, none), Ok(Cow::Borrowed(p)) if p == path),
                "{path:?}"
            );
        }
    }

    #[test]
    fn parameters_are_removed_per_segment() {
        assert_eq!(without_parameters("/a/b"), None);
        assert_eq!(without_parameters("/admin;x").as_deref(), Some("/admin"));
        assert_eq!(
            without_parameters("/a;x=1/b;y/c").as_deref(),
            Some("/a/b/c")
        );
        assert_eq!(without_parameters("/;x/a").as_deref(), Some("//a"));
    }
}
