"""Command-line tools: thin layers over the library (each ``main`` parses, calls, prints)."""
