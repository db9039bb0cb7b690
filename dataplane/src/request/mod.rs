//! What is checked and derived from a request before it is routed: the head
//! rules, the normalised path and the client address.

pub(crate) mod ctx;
pub mod forwarded;
pub mod head;
pub mod path;
