"""Codecs for the request and data formats: one module per format."""
