//! Portico's custom resources. Placeholder: filled by the HTTPRoute work.
#![forbid(unsafe_code)]
