"""The session relay: pairs the two WebSocket sides of a session by their one-time passes and splices bytes.

It never holds the session's SSH keys: the PC's SSH server and the engineer's own
ssh talk end to end through it. See docs/design.md (a session is spliced in one
server process; server.relay.forward brings its other side there) and
docs/threat-model.md (what a compromised relay can and cannot do).
"""
