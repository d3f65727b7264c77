"""Module-name patterns from files, matched in time linear in the name.

Adapter configs name the modules they adapt with patterns (`target_modules` in PEFT's
adapter_config.json, globs in minitl's LoRAConfig). Python's `re` backtracks: a regex such as
`(.*.*)*x` takes exponential time on a 40-character module name, so a few bytes of config
would hang `minitl export`. Patterns read from files are therefore matched here:

- `SafeRegex` parses a regex with Python's own parser and runs it as a Thompson NFA (every
  alternative advanced together, one character at a time), so a match costs at most
  O(states x len(name)) whatever the pattern, with the state sets cached as a DFA. Each
  single-character test (a literal, a class, `.`) and each anchor (`^ $ \\A \\Z \\b \\B`) is
  evaluated by `re` itself, compiled alone, so the answers are exactly `re.fullmatch`'s.
  Constructs that need backtracking or are not regular (backreferences, lookarounds, atomic
  groups, possessive repeats) are refused with ValueError, as are patterns over
  MAX_PATTERN_CHARS characters or MAX_STATES NFA states (`a{1000}{1000}`).
- `glob_match` is `fnmatch.fnmatchcase` with the same length cap: since Python 3.11 fnmatch
  compiles `*` to atomic groups, which cannot backtrack.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

try:  # the parser behind re.compile; `sre_parse` before Python 3.11
    from re import _constants as _sc  # type: ignore[attr-defined]  # private, no stubs
    from re import _parser as _sp  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    import sre_constants as _sc  # type: ignore[no-redef]
    import sre_parse as _sp  # type: ignore[no-redef]

__all__ = ["MAX_PATTERN_CHARS", "MAX_STATES", "SafeRegex", "check_pattern", "glob_match"]

MAX_PATTERN_CHARS = 1000
MAX_STATES = 20_000

_CATEGORY = {_sc.CATEGORY_DIGIT: r"\d", _sc.CATEGORY_NOT_DIGIT: r"\D",
             _sc.CATEGORY_SPACE: r"\s", _sc.CATEGORY_NOT_SPACE: r"\S",
             _sc.CATEGORY_WORD: r"\w", _sc.CATEGORY_NOT_WORD: r"\W"}
_ANCHOR = {_sc.AT_BEGINNING: "^", _sc.AT_BEGINNING_STRING: r"\A", _sc.AT_END: "$",
           _sc.AT_END_STRING: r"\Z", _sc.AT_BOUNDARY: r"\b", _sc.AT_NON_BOUNDARY: r"\B"}
_LEAF_FLAGS = re.IGNORECASE | re.ASCII | re.DOTALL | re.MULTILINE | re.LOCALE


def check_pattern(pattern: Any, what: str = "pattern") -> str:
    """`pattern` itself when it is a str of at most MAX_PATTERN_CHARS characters."""
    if not isinstance(pattern, str):
        raise ValueError(f"{what} must be a string, got {type(pattern).__name__}")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"{what} is {len(pattern)} characters long (at most "
                         f"{MAX_PATTERN_CHARS})")
    return pattern


def glob_match(name: str, pattern: str) -> bool:
    """fnmatch.fnmatchcase(name, pattern), refusing patterns over MAX_PATTERN_CHARS."""
    return fnmatch.fnmatchcase(name, check_pattern(pattern, "glob pattern"))


class _Builder:
    """Thompson construction: states are ("char", leaf), ("at", leaf), ("split",) or
    ("match",); `out[i]` lists the successors of state i."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.kind: list[tuple[str, Any]] = []
        self.out: list[list[int]] = []
        self.leaves: dict[tuple[str, int], Any] = {}

    def state(self, kind: str, leaf: Any = None) -> int:
        if len(self.kind) >= MAX_STATES:
            raise ValueError(f"regex {self.pattern!r} is too large (over {MAX_STATES} states "
                             "once its repeats are expanded)")
        self.kind.append((kind, leaf))
        self.out.append([])
        return len(self.kind) - 1

    def leaf(self, source: str, flags: int) -> Any:
        key = (source, flags & _LEAF_FLAGS)
        if key not in self.leaves:
            self.leaves[key] = re.compile(source, key[1])
        return self.leaves[key]

    # A fragment is (start state, dangling states whose successor is not yet set).
    def seq(self, items: Any, flags: int) -> tuple[int, list[int]]:
        start = self.state("split")
        ends = [start]
        for op, av in items:
            s, e = self.node(op, av, flags)
            for d in ends:
                self.out[d].append(s)
            ends = e
        return start, ends

    def node(self, op: Any, av: Any, flags: int) -> tuple[int, list[int]]:
        if op in (_sc.LITERAL, _sc.NOT_LITERAL, _sc.ANY, _sc.IN):
            s = self.state("char", self.leaf(self._class_source(op, av), flags))
            return s, [s]
        if op is _sc.AT:
            if av not in _ANCHOR:
                raise ValueError(f"regex {self.pattern!r}: unsupported anchor {av}")
            s = self.state("at", self.leaf(_ANCHOR[av], flags))
            return s, [s]
        if op is _sc.SUBPATTERN:
            _group, add, remove, items = av
            return self.seq(items, (flags | add) & ~remove)
        if op is _sc.BRANCH:
            start, ends = self.state("split"), []
            for items in av[1]:
                s, e = self.seq(items, flags)
                self.out[start].append(s)
                ends += e
            return start, ends
        if op in (_sc.MAX_REPEAT, _sc.MIN_REPEAT):  # greediness does not change fullmatch
            return self.repeat(av, flags)
        raise ValueError(f"regex {self.pattern!r} uses {str(op).lower()}, which target "
                         "patterns do not support (backreferences, lookarounds, atomic "
                         "groups and possessive repeats need backtracking)")

    def repeat(self, av: Any, flags: int) -> tuple[int, list[int]]:
        lo, hi, items = av
        start = self.state("split")
        ends = [start]
        for _ in range(lo):
            s, e = self.seq(items, flags)
            for d in ends:
                self.out[d].append(s)
            ends = e
        if hi == _sc.MAXREPEAT:  # a loop: each end may go round again or leave
            loop = self.state("split")
            for d in ends:
                self.out[d].append(loop)
            s, e = self.seq(items, flags)
            self.out[loop].append(s)
            for d in e:
                self.out[d].append(loop)
            return start, [loop]
        exits = list(ends)
        for _ in range(hi - lo):  # optional copies, each may be the last
            s, e = self.seq(items, flags)
            for d in ends:
                self.out[d].append(s)
            ends = e
            exits += e
        return start, exits

    def _class_source(self, op: Any, av: Any) -> str:
        if op is _sc.LITERAL:
            return re.escape(chr(av))
        if op is _sc.NOT_LITERAL:
            return "[^" + re.escape(chr(av)) + "]"
        if op is _sc.ANY:
            return "."
        negate, parts = "", []
        for iop, iav in av:
            if iop is _sc.NEGATE:
                negate = "^"
            elif iop is _sc.LITERAL:
                parts.append(re.escape(chr(iav)))
            elif iop is _sc.RANGE:
                parts.append(re.escape(chr(iav[0])) + "-" + re.escape(chr(iav[1])))
            elif iop is _sc.CATEGORY and iav in _CATEGORY:
                parts.append(_CATEGORY[iav])
            else:
                raise ValueError(f"regex {self.pattern!r}: unsupported class item {iop}")
        return "[" + negate + "".join(parts) + "]"


class SafeRegex:
    """A regular expression whose `fullmatch` cannot backtrack (see the module docstring)."""

    def __init__(self, pattern: Any) -> None:
        self.pattern = check_pattern(pattern, "regex")
        try:
            parsed = _sp.parse(self.pattern, 0)
        except (re.error, RecursionError, OverflowError) as e:
            raise ValueError(f"regex {self.pattern!r} is invalid: {e}") from None
        b = _Builder(self.pattern)
        try:
            start, ends = b.seq(list(parsed), parsed.state.flags)
        except RecursionError:
            raise ValueError(f"regex {self.pattern!r} is nested too deeply") from None
        final = b.state("match")
        for d in ends:
            b.out[d].append(final)
        self._kind, self._out, self._start = b.kind, b.out, start
        # the anchors' answers at a position are part of a DFA state's key
        self._anchors = sorted({id(leaf): leaf for k, leaf in b.kind if k == "at"}.items())
        self._dfa: dict[tuple[Any, ...], frozenset[int]] = {}

    def _context(self, s: str, pos: int) -> tuple[bool, ...]:
        return tuple(leaf.match(s, pos) is not None for _, leaf in self._anchors)

    def _closure(self, states: Any, ctx: tuple[bool, ...]) -> frozenset[int]:
        """States reachable without consuming a character, given the anchors' answers."""
        holds = {key: ok for (key, _), ok in zip(self._anchors, ctx)}
        seen: set[int] = set()
        stack = list(states)
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            kind, leaf = self._kind[i]
            if kind == "at" and not holds[id(leaf)]:
                continue
            seen.add(i)
            if kind != "char":
                stack.extend(self._out[i])
        return frozenset(seen)

    def fullmatch(self, s: str) -> bool:
        """Whether re.fullmatch(pattern, s) would match, in O(states x len(s))."""
        current = self._closure([self._start], self._context(s, 0))
        for pos, ch in enumerate(s):
            ctx = self._context(s, pos + 1)
            key = (current, ch, ctx)
            nxt = self._dfa.get(key)
            if nxt is None:
                moved = [j for i in current if self._kind[i][0] == "char"
                         and self._kind[i][1].fullmatch(ch) for j in self._out[i]]
                nxt = self._closure(moved, ctx)
                if len(self._dfa) < 100_000:  # memory stays bounded on hostile input
                    self._dfa[key] = nxt
            current = nxt
            if not current:
                return False
        return any(self._kind[i][0] == "match" for i in current)
