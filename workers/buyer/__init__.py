"""Buyer data protection: sealing recipients, the key services, erasure."""
