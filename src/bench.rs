//! Kernel benchmarks (placeholder, filled below).
