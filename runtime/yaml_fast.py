"""The configuration's YAML tree built by libyaml's C parser when it is installed (ruamel.yaml.clibz).

The pure-Python round-trip loader spends about 1 ms per job of a 10,000-job file scanning comments the
daemon never reads (most of a 7 s start-up).  Here the C parser composes the node tree and ruamel's own
round-trip constructor builds the same ``CommentedMap``/``CommentedSeq`` values from it, with the same
line/column of every key and value, so config_parse.py walks one kind of tree either way.  Only comments
are not kept (config_edit.py, which writes the file back, keeps using the round-trip loader).

Call ``load`` only when ``available()``; a YAML error raises a ``MarkedYAMLError`` like the pure loader's, and
config_parse.py then asks the pure loader again, so the message a user sees is the same either way.
"""

from __future__ import annotations

from typing import Any

from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.resolver import VersionedResolver

try:
    from ruamel.yaml.cyaml import CParser  # type: ignore[attr-defined]
except ImportError:  # no C parser: the pure loader does the whole job
    CParser = None


def available(text: str) -> bool:
    """True when the C parser is installed and ``text`` names no YAML version of its own (``%YAML 1.1``
    changes how scalars resolve, which only the pure loader follows)."""
    return CParser is not None and "%YAML" not in text


def load(text: str) -> Any:
    """The round-trip tree of one YAML document (None for an empty one)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        return loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()


if CParser is not None:
    class _Loader(CParser, RoundTripConstructor, VersionedResolver):  # type: ignore[misc]
        """CParser's nodes, the round-trip constructor's values, YAML 1.2 resolution (as typ="rt")."""

        comment_handling = None  # read by RoundTripConstructor; no comments come from the C parser

        def __init__(self, text: str) -> None:
            CParser.__init__(self, text)
            RoundTripConstructor.__init__(self, loader=self)
            VersionedResolver.__init__(self, loader=self)

        @property
        def processing_version(self) -> Any:
            # YAML 1.2, as the pure loader resolves a file without a %YAML line; the inherited lookup
            # fails over two AttributeErrors per scalar here, a fifth of the whole load
            return (1, 2)
