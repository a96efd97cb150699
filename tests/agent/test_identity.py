"""What a PC says about itself: the machine id is hashed, and tests can make two PCs claim the same one."""

from __future__ import annotations

from agent import identity
from protocol import signing


def test_the_test_machine_id_override_is_reported_hashed_like_a_real_one(monkeypatch):
    monkeypatch.setenv(identity.TEST_MACHINE_ID_ENV, "4c4c4544003957108052b4c04f384833")
    monkeypatch.setenv(identity.TEST_HOSTNAME_ENV, "pc-payroll-04")
    first = identity.describe(signing.generate_key())
    second = identity.describe(signing.generate_key())
    assert first.machine_id == second.machine_id and len(first.machine_id) == 64
    assert "4c4c4544003957108052b4c04f384833" not in first.machine_id
    assert (first.hostname, second.hostname) == ("pc-payroll-04", "pc-payroll-04")
    assert first.public_key != second.public_key

    monkeypatch.setenv(identity.TEST_MACHINE_ID_ENV, "another-machine")
    assert identity.machine_id() != first.machine_id
