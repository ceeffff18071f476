"""Helpers shared by the tests and the benchmarks: running facilities and hubs, HTTP, a browser."""
