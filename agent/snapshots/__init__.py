"""Snapshots of the user's data: the restic wrapper now; the policy, schedule and sample-restore check next.

:mod:`agent.snapshots.restic` drives the real ``restic`` binary through
:mod:`agent.execute`; nothing here prints or exits.
"""
