//! Which rule a request belongs to: the pure lookup (`router`), the patterns
//! it compiles, and the compiled, immutable `RouteTable` a request loads once.

pub mod pattern;
pub mod router;
pub(crate) mod table;
