"""Database layer: read-only engines, reflection and dialect quirks."""
