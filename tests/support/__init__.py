"""Real services for tests: a throwaway PostgreSQL cluster and an S3 endpoint, both on 127.0.0.1."""
