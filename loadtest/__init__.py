"""Locust load test of the platform and the traffic mix it shares with the benchmark."""
