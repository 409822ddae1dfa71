"""Model engines: load a model once per process and turn requests into tokens."""
