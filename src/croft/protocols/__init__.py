"""Protocols: run grids of (method × held-out domain × seed) and aggregate them."""
