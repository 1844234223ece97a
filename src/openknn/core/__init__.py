"""The pure math and the in-memory model: no files, no servers."""
