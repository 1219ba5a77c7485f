"""Stage 7 of the pipeline: benchmarks (``repvgg-bench``); the method is in docs/benchmark.md."""
