"""Semantic routing: embed a prompt and pick an intent and a model tier."""
