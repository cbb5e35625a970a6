"""A container image registry: OCI Distribution v1.1 and Docker Registry HTTP API v2."""

__version__ = "0.1.0"
