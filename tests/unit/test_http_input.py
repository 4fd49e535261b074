"""A NUL anywhere in a JSON body is refused at the door (Postgres text cannot hold one)."""

from __future__ import annotations

import pytest

from novalog.middleware import has_nul


@pytest.mark.parametrize(("body", "nul"), [
    (rb'{"flavor": {"name": "a\u0000b"}}', True),
    (rb'{"server": {"metadata": {"k\u0000": "v"}}}', True),  # in a key
    (rb'{"a": [1, {"b": ["x\u0000"]}]}', True),  # deep in a list
    (b'{"a": "\x00"}', True),  # raw
    (rb'{"a": "\\u0000 is how JSON writes it"}', False),  # an escaped backslash: no NUL
    (rb'{"a": "fine"}', False),
    (b"not json \\u0000", False),  # the route's parser refuses it itself
    (b"", False),
])
def test_nul_in_a_json_body(body: bytes, nul: bool) -> None:
    assert has_nul(body) is nul
