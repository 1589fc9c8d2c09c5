"""Stores: one class per concern, each taking a Database; composed, never mixed in."""
