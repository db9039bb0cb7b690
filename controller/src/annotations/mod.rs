//! The annotation registry (placeholder; filled by the annotations work).
