"""Codecs for the request and data formats: one module per format."""


class NotQuick(Exception):  # noqa: N818 - a signal, not an error anyone sees
    """Raised by a codec asked for its quick path only (``quick=True``) where the body needs
    more: the checked path that names a bad record, or a slower decoder. The server then
    decodes the body again, fully, off the event loop."""
