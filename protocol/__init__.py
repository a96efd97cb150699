"""Wire schemas, exit statuses and signing shared by the agent, the server and the CLI.

This package depends on pydantic and cryptography only.
"""

PROTOCOL_VERSION = 1
