"""`openknn bench`: the tuning report, outside the core's way."""
