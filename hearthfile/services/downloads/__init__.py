"""URL downloads cached into the store (DESIGN.md section 12)."""
