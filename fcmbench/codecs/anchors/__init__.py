"""Standard-codec anchors (VVC image and feature anchors)."""
