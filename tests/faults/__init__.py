"""Fault injection: the server killed mid-push, storage operations that must be durable."""
