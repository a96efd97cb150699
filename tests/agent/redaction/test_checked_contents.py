"""The final check reading files early: the same findings as reading them at the end, or it reads them again."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.redaction import RedactionOptions, Redactor, tree
from agent.redaction.detectors import build_pipeline
from agent.redaction.pseudonyms import EMAIL, HOSTNAME, IPV4, IPV6, MAC, USERNAME, PseudonymMap
from agent.redaction.textfiles import read_text_chunks
from agent.redaction.verify import _scan_pieces
from tests.agent.redaction.corpus_manifest import CORPUS

CORPORA = ("secrets", "clean", "identities")


def corpus_files() -> list[Path]:
    return [entry.path for name in CORPORA for entry in tree.walk(CORPUS / name) if entry.kind == tree.FILE]


def learned_map() -> PseudonymMap:
    learned = PseudonymMap()
    for kind, value in ((EMAIL, "jane.doe@corp.example"), (USERNAME, "jdoe"), (HOSTNAME, "pc-0042.corp.example"),
                        (IPV4, "10.20.30.40"), (IPV6, "fd00::42"), (MAC, "00:11:22:33:44:55")):
        learned.pseudonym(kind, value)
    return learned


def test_with_default_options_what_the_detectors_find_does_not_depend_on_what_the_map_learned() -> None:
    """What reading files early rests on: if a detector starts to depend on learned values in the default
    options, Redactor.check_early must stop reading early for them."""
    files = corpus_files()
    assert len(files) > 10
    for path in files:
        findings = []
        for pseudonyms in (PseudonymMap(), learned_map()):
            with open(path, "rb") as raw:
                try:
                    _, pieces = read_text_chunks(raw)
                    findings.append(_scan_pieces(pieces, build_pipeline(RedactionOptions(), pseudonyms), None))
                except (UnicodeDecodeError, ValueError):
                    findings.append("unreadable")
        assert findings[0] == findings[1], path.name


def findings_of(redactor: Redactor, root: Path) -> set[tuple[str, int, str]]:
    return {(f.path, f.line, f.detector) for f in redactor.verify_tree(root)}


@pytest.fixture
def unredacted(tmp_path) -> Path:
    """The secrets corpus as it is: plenty for the final check to find."""
    root = tmp_path / "bundle"
    shutil.copytree(CORPUS / "secrets", root)
    return root


def test_files_read_early_give_the_final_check_the_same_findings(unredacted: Path) -> None:
    at_the_end = findings_of(Redactor(), unredacted)
    assert at_the_end
    early = Redactor()
    files = [entry.path for entry in tree.walk(unredacted) if entry.kind == tree.FILE]
    for path in files:
        early.check_early(path)
    assert len(early._checked) > 0
    assert findings_of(early, unredacted) == at_the_end


def test_a_file_changed_after_it_was_read_early_is_read_again(tmp_path) -> None:
    note = tmp_path / "bundle" / "notes.txt"
    note.parent.mkdir()
    note.write_text("all quiet on this PC\n")
    redactor = Redactor()
    redactor.check_early(note)
    assert findings_of(redactor, note.parent) == set()
    note.write_text("all quiet on this PC\ndb password=Kx9#mQ2vLz7w\n")
    assert ("notes.txt", 2, "password") in {(p, line, d.split("-")[0]) for p, line, d in findings_of(redactor, note.parent)}


def test_originals_the_map_learns_after_the_early_read_are_still_searched_for(tmp_path) -> None:
    remote = tmp_path / "bundle" / "git.txt"
    remote.parent.mkdir()
    remote.write_text("remote: git@github.com:acme/tools.git\n")  # a git remote, not a mailbox: left alone
    redactor = Redactor()
    redactor.check_early(remote)
    assert findings_of(redactor, remote.parent) == set()
    redactor.redact_text("write to git@github.com about it")  # the same spelling, as a mailbox elsewhere
    assert findings_of(redactor, remote.parent) == {("git.txt", 1, EMAIL)}


def test_a_file_the_scrub_left_unchanged_gives_the_same_findings_from_its_second_look_alone(tmp_path) -> None:
    """What sparing the detectors a second read rests on: in every corpus file the scrub replaced nothing in,
    the detectors find nothing either, so the second look's findings are the file's findings."""
    redactor = Redactor()
    unchanged = 0
    for path in corpus_files():
        out = tmp_path / "out" / path.name
        out.parent.mkdir(exist_ok=True)
        result = redactor.redact_file(path, out)
        if result.status != "scrubbed" or result.counts or out.read_bytes() != path.read_bytes():
            continue
        unchanged += 1
        with open(out, "rb") as raw:
            _, pieces = read_text_chunks(raw)
            full = _scan_pieces(pieces, build_pipeline(RedactionOptions(), PseudonymMap()), None)
        early = Redactor()
        early.check_early(out, unchanged_from=path)
        assert early._checked.found(out.read_bytes()) == full, path.name
    assert unchanged >= 5


def test_a_file_that_is_not_what_it_was_scrubbed_from_gets_the_detectors_too(tmp_path) -> None:
    source, out = tmp_path / "staged.txt", tmp_path / "bundle" / "staged.txt"
    out.parent.mkdir()
    source.write_text("all quiet on this PC\n")
    out.write_text("all quiet on this PC\ndb password=Kx9#mQ2vLz7w\n")  # not what the scrub read
    redactor = Redactor()
    redactor.check_early(out, unchanged_from=source)
    assert ("notes", 2, "password") in {("notes", line, d.split("-")[0])
                                         for line, d in redactor._checked.found(out.read_bytes())}
    assert findings_of(redactor, out.parent)


@pytest.mark.parametrize("option", ["usernames", "hostnames", "network"])
def test_nothing_is_read_early_when_a_detector_depends_on_learned_names(option, unredacted: Path) -> None:
    redactor = Redactor(RedactionOptions(**{option: True}))
    for entry in tree.walk(unredacted):
        if entry.kind == tree.FILE:
            redactor.check_early(entry.path)
    assert len(redactor._checked) == 0


def corpus_texts() -> list[str]:
    """Every line of the corpora as a text of its own, a few whole files, and lines that must be judged alone."""
    texts: list[str] = []
    for path in corpus_files():
        try:
            content = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        texts += content.splitlines()
        if len(content) < 2000:
            texts.append(content)  # several lines: scanned on its own
    cut = "[... helpline: 900 bytes omitted here; kept the first 40 and the last 40 bytes ...]"
    texts[len(texts) // 3:len(texts) // 3] = [
        "secrets:", "  password: hunter2-correct-horse", "-----BEGIN PRIVATE KEY-----", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
        "x" * 39 + " tail-of-a-secret-9f8e7d6c5b4a", cut, "İstanbul şifre: Zq9!vR2#kL8@", "line\rwith a carriage return",
        "token: [", "  \"abc\",", "]", "",
    ]
    return texts


@pytest.mark.parametrize("options", [RedactionOptions(), RedactionOptions(usernames=True, hostnames=True, network=True)],
                         ids=["default", "names-and-network"])
def test_judging_many_texts_in_one_scan_finds_what_judging_each_alone_does(options) -> None:
    from agent.redaction.verify import LeakScanner, scan_text, scan_texts

    texts = corpus_texts()
    assert len(texts) > 1000
    alone_pipeline, joined_pipeline = build_pipeline(options, learned_map()), build_pipeline(options, learned_map())
    leaks = LeakScanner(learned_map(), ("jdoe",))
    alone = [sorted(detector for _, detector in scan_text(text, alone_pipeline, leaks)) for text in texts]
    joined = [sorted(found) for found in scan_texts(texts, joined_pipeline, leaks)]
    assert sum(1 for found in alone if found) > 50, "the corpus gives the check plenty to find"
    differ = [(text[:80], a, j) for text, a, j in zip(texts, alone, joined) if a != j]
    assert not differ, differ[:5]


def test_the_leak_search_finds_what_its_pattern_finds_in_any_text() -> None:
    from agent.redaction.verify import LeakScanner

    tricky = ["Jane.Doe@Corp.Example wrote", "login as JDOE", "PC-0042.CORP.EXAMPLE", "ſecret and İvan", "10.20.30.40",
              "FD00::42", "00-11-22-33-44-55", "jdoe", "xjdoe", "nothing at all", "\u212adoe", "jdoe\n" * 3,
              "İvan-pc.corp is up", "ſecret-pc is up", "sam-pc is up", "\u212adoe-pc is up"]
    texts = tricky + corpus_texts()
    for pseudonyms in (learned_map(), PseudonymMap()):
        for extra in ((), ((USERNAME, "ſam"),), ((HOSTNAME, "ivan-pc.corp"), (HOSTNAME, "secret-pc"), (HOSTNAME, "kdoe-pc")),
                      ((HOSTNAME, "ſam-pc"),)):
            learned = pseudonyms.copy()
            for kind, value in extra:
                learned.pseudonym(kind, value)
            scanner = LeakScanner(learned, ("jdoe", "ivan", "ſam"))
            if scanner.pattern is None:
                assert all(scanner.scan(text) == [] for text in texts)
                continue
            for text in texts:
                assert scanner.scan(text) == [(m.start(), m.lastgroup) for m in scanner.pattern.finditer(text)], text[:80]
    assert LeakScanner(learned_map(), ("jdoe",))._needles, "ASCII originals are searched plainly first"
