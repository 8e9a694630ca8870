"""Shipium's label API. Shipium's field names live in this folder only."""
