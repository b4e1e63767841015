//! Run analysis (placeholder).
