"""The remote session on the PC: an embedded SSH server that obeys one signed, consented grant.

:mod:`agent.session.host` serves the engineer's SSH connection (deny by default),
:mod:`agent.session.pty` runs the user's shell in a PTY, :mod:`agent.session.grants`
remembers used grants, :mod:`agent.session.recording` writes the asciicast and
:mod:`agent.session.files` is the SFTP view of the user's files. It runs inside the
user's own ``helpline session`` process, never in the service.
"""
