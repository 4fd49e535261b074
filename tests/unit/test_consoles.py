"""Console output as Nova's API returns it, and the tiny guest's boot parameters."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.compute.driver import DirectBoot, domain_xml
from novalog.consoles import MAX_CONSOLE_BYTES, console_output
from novalog.web import ApiError
from producers.actions import _console_length
from schemas import payloads

FLAVOR = payloads.Flavor(flavorid="1", name="m1.tiny", vcpus=1, memory_mb=512, root_gb=1,
                         ephemeral_gb=0, swap_mb=0, extra_specs={})


def test_the_last_lines_without_control_characters(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(b"one\n\x1b[0mtwo\x07\n\tthree\nfour\n")
    assert console_output(log, None) == "one\n[0mtwo\n\tthree\nfour\n"
    assert console_output(log, 3) == "\tthree\nfour\n"  # Nova's count: "" is the 3rd
    assert console_output(log, 3).split("\n") == ["\tthree", "four", ""]
    assert console_output(log, 0) == ""
    log.write_bytes(b"one\ntwo\nthree")  # a line still being written counts
    assert console_output(log, 2) == "two\nthree"
    assert console_output(log, 100).startswith("one\n")
    assert console_output(tmp_path / "absent.log", 5) == ""  # not written yet


def test_at_most_the_last_100_kib(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(b"a" * MAX_CONSOLE_BYTES + b"\nlast line\n")
    out = console_output(log, None)
    assert len(out) == MAX_CONSOLE_BYTES and out.endswith("last line\n")


@pytest.mark.parametrize(("value", "length"), [
    ({}, None), ({"length": None}, None), ({"length": 5}, 5), ({"length": "7"}, 7),
    ({"length": -1}, None), ({"length": "-1"}, None), ({"length": 0}, 0)])
def test_nova_s_length_forms(value: dict[str, object], length: int | None) -> None:
    assert _console_length(value) == length


@pytest.mark.parametrize("value", [
    {"length": "x"}, {"length": -2}, {"length": True}, {"length": 1.5}, {"lines": 1}, [],
    "5", {"length": "1e3"}])
def test_bad_lengths_are_400(value: object) -> None:
    with pytest.raises(ApiError) as bad:
        _console_length(value)
    assert bad.value.status == 400


def test_a_kernel_image_boots_directly_with_its_command_line(tmp_path: Path) -> None:
    boot = DirectBoot("/base/k", "/base/r", "console=ttyS0 novalog.uuid=u novalog.name=a%20b")
    xml = domain_xml("6a3c6b2e-0000-4000-8000-000000000001", "a b", FLAVOR, [], [],
                     tmp_path / "console.log", "qemu1", boot)
    assert "<kernel>/base/k</kernel><initrd>/base/r</initrd>" in xml
    assert "<cmdline>console=ttyS0 novalog.uuid=u novalog.name=a%20b</cmdline>" in xml
    assert "<boot dev='hd'/>" not in xml and "append='on'" in xml
    assert "<novalog:owner>qemu1</novalog:owner>" in xml
    plain = domain_xml("6a3c6b2e-0000-4000-8000-000000000001", "a", FLAVOR, [], [],
                       tmp_path / "console.log", "qemu1")
    assert "<boot dev='hd'/>" in plain and "<kernel>" not in plain


def test_following_prints_only_what_is_new_even_when_the_window_moves() -> None:
    from producers.cli import _new_part

    assert _new_part("", "a\n") == "a\n"
    assert _new_part("a\n", "a\nb\n") == "b\n"
    window = "x" * 600 + "line\n"
    assert _new_part(window, window[100:] + "next\n") == "next\n"  # the oldest 100 gone
    assert _new_part("old guest\n", "new\n") == "new\n"  # nothing in common: all of it
