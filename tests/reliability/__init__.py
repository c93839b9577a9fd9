"""Reliability and security: dead letters, recovery, limits, injection, secrets, soak, API fuzzing."""
