"""Shared domain code: taxonomy, detector readers, mapping tables, rules mapper, frameworks."""
