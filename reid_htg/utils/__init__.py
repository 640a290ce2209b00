"""Small helpers: plots."""
