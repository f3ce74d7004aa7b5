"""Reports: RD tables, BD-rate tables (and, later, the HTML page)."""
