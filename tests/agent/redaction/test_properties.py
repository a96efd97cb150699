"""Properties over generated text: embedded tokens never survive; redaction is idempotent."""

from __future__ import annotations

import base64
import json
import tempfile
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.redaction import RedactionOptions, Redactor

ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

aws_key_ids = st.builds(
    lambda prefix, body: prefix + body,
    st.sampled_from(["AKIA", "ASIA"]),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", min_size=16, max_size=16),
)
github_tokens = st.one_of(
    st.builds(
        lambda prefix, body: prefix + body,
        st.sampled_from(["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]),
        st.text(alphabet=ALNUM, min_size=36, max_size=60),
    ),
    st.builds(lambda body: "github_pat_" + body, st.text(alphabet=ALNUM + "_", min_size=22, max_size=90)),
)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


jwts = st.builds(
    lambda header, claims, signature: (
        f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}.{_b64url(signature)}"
    ),
    st.fixed_dictionaries({"alg": st.sampled_from(["HS256", "RS256", "ES256"]), "typ": st.just("JWT")}),
    st.dictionaries(
        st.text(ALNUM, min_size=1, max_size=8), st.integers() | st.text(max_size=20), min_size=1, max_size=5
    ),
    st.binary(min_size=16, max_size=64),
)
secrets = st.one_of(aws_key_ids, github_tokens, jwts)
# Anything at all around the token, including other secrets, unicode and line breaks...
noise = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
# ...as long as something separates the token from it, as in every real file.
separators = st.sampled_from([" ", "\n", "\t", "=", ": ", '"', "'", ",", "(", "[", "<", "|", "\r\n", "/"])


@settings(max_examples=300, deadline=None)
@given(before=noise, left=separators, secret=secrets, right=separators, after=noise)
def test_embedded_token_never_survives(before, left, secret, right, after):
    text = before + left + secret + right + after
    for options in (RedactionOptions(), RedactionOptions(network=True, hostnames=True, usernames=True)):
        out, counts = Redactor(options).redact_text(text)
        assert secret not in out
        assert sum(counts.values()) >= 1


@settings(max_examples=200, deadline=None)
@given(before=noise, left=separators, secret=secrets, right=separators, after=noise)
def test_redaction_is_idempotent(before, left, secret, right, after):
    redactor = Redactor(RedactionOptions(network=True, hostnames=True, usernames=True))
    once, _ = redactor.redact_text(before + left + secret + right + after)
    twice, counts = redactor.redact_text(once)
    assert twice == once
    assert counts == {}


@settings(max_examples=100, deadline=None)
@given(before=noise, left=separators, secret=secrets, right=separators, after=noise)
def test_verification_agrees_with_redaction(before, left, secret, right, after):
    """What redaction writes, verification (the same detectors, re-run) finds clean; the input it flags."""
    redactor = Redactor(RedactionOptions(network=True, hostnames=True, usernames=True))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        text = before + left + secret + right + after
        (root / "in" / "generated.txt").write_text(text, encoding="utf-8", newline="")
        result = redactor.redact_tree(root / "in", root / "out")[0]
        if "\x00" in text:  # a NUL byte makes it binary: dropped, nothing written
            assert result.status == "dropped"
            assert not (root / "out" / "generated.txt").exists()
            return
        assert result.status == "scrubbed"
        assert redactor.verify_tree(root / "out") == []
        assert redactor.verify_tree(root / "in") != []


# Pieces of the forms the detectors look for, glued in any order: finds the places where one
# detector's output becomes another detector's input.
FRAGMENTS = [
    "password", "Password", "passwd", "pwd", "token", "secret", "api_key", "auth", "session", "cookie", "key",
    "=", ":", ": ", " = ", " ", "  ", "\t", '"', "'", "`", "[", "]", "{", "}", "(", ")", ",", ";", "&", "?", "\n",
    "\r\n", "-", "--", "$", "@", "/", "\\", "|", ">", "<", "#", "export ", "Authorization", "Bearer ", "Basic ",
    "x", "abc", "Q1w2", "AKIAQ3EGRD5HXW7PLMNB", "ghp_" + "a" * 36, "-----BEGIN RSA PRIVATE KEY-----",
    "-----END RSA PRIVATE KEY-----", "https://", "u:p@h.com", "bob@example.org", "10.1.2.3", "fe80::1234",
    "aa:bb:cc:dd:ee:ff", "/home/zed", "C:\\Users\\Ann", "host.corp.lan", "<password>", "</password>", "value=",
    "- ", "    ", "1.2.3.4", "version ", "sig=", "x" * 20, "eyJhbGciOiJIUzI1NiJ9", ".eyJzdWIiOiIxMjM0In0",
    ".c2lnbmF0dXJlMTIz", "Private-Lines: 2", "$6$salt$", "hashhashhash",
]  # fmt: skip
structured = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)


EVERYTHING = RedactionOptions(network=True, hostnames=True, usernames=True)


@settings(max_examples=400, deadline=None)
@given(
    text=structured,
    options=st.sampled_from([RedactionOptions(), EVERYTHING]),
)
# Found by the search: a bearer credential in parts joined by a colon; an address left alone after "pwd=" that
# reads as a password once it is a pseudonym; a colon-separated file's pattern splitting an earlier token.
@example(text="Bearer host.corp.lan:eyJhbGciOiJIUzI1NiJ9", options=RedactionOptions())
@example(text="pwd=1.2.3.4", options=EVERYTHING)
@example(text="pwd=,1.2.3.4", options=EVERYTHING)
@example(text="pwd=bob", options=EVERYTHING)
@example(text="- password@<password>password", options=RedactionOptions())
@example(text="sig=sessionsig=bob@example.org", options=RedactionOptions())
# A token whose name holds a trigger ("[REDACTED:bearer-token]") wakes a detector the original line did not.
@example(text="Bearer /home/zedexport eyJhbGciOiJIUzI1NiJ9", options=RedactionOptions())
@example(text="Bearer Private-Lines: 2Private-Lines: 2", options=RedactionOptions())
# A pseudonym shorter than what it replaced pulls a token into the window after "password", or leaves a
# random-looking rest where an address stood.
@example(text="password    /home/zedghp_" + "a" * 36 + ":eyJhbGciOiJIUzI1NiJ9", options=EVERYTHING)
@example(text='password"::abc.eyJzdWIiOiIxMjM0In0', options=EVERYTHING)
# A value cut short beside a token ("<password" before ">"), so that token and rest read as a new value; a
# list of an earlier pass's tokens followed by more text, replaced by itself and counted again.
@example(text=" password :<password>", options=RedactionOptions())
@example(text="<password:x <password>password", options=RedactionOptions())
@example(text="<password>--u:p@h.comhttps://\npwdBasic : ['</password>'fe80::1234", options=EVERYTHING)
def test_redaction_of_structured_text_is_idempotent(text, options):
    redactor = Redactor(options)
    once, _ = redactor.redact_text(text)
    assert redactor.redact_text(once) == (once, {})
