"""The platform on several hosts (network namespaces) under failures: `make cluster`."""
