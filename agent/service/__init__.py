"""The agent service: the PC's long-running agent (``helpline agent run``).

:mod:`.run` holds the loop: scheduled snapshot work, check-in with the server,
and the engineer -> PC request channel; it stops cleanly on SIGTERM and Ctrl-C.
"""
