"""End-to-end model benchmarks (one module per pipeline, each exposing `cases`)."""
