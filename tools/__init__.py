"""Helper tools: the certificate toolkit and the engine configuration toolkit."""
