"""Real services the tests start themselves, on free loopback ports (Ceph's S3 gateway)."""
