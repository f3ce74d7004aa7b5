"""Feature codecs: one file per method, named after it."""
