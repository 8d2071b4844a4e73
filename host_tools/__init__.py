"""Albatross host tools: the `albatross` command and the libraries behind it."""
