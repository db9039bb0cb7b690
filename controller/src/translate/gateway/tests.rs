//! Gateway API results (status) from fixtures.
