"""Runnable examples; docs/testing.rst includes test_with_loopback_sshd.py."""
