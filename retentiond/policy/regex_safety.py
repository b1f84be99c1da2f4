"""Which ``re:`` patterns Python's backtracking regex engine may run for too long.

Python's ``re`` backtracks: when a name does not match, it tries every way the pattern could
have matched its beginning. A pattern whose parts can match the same text in many ways, such
as ``(a+)+b`` against ``aaaa...a``, then takes exponential time (a 40-character tag: hours),
and ``.*-.*-.*x`` polynomial time. ``re`` has no time limit, so such patterns are refused when
the policy is loaded (by ``check``, and at start for ``plan``, ``apply`` and ``serve``), with
the reason and a way to rewrite them. :func:`regex_problem` decides, from the pattern alone:

1. Backreferences (``\\1``, ``(?P=name)``) and conditionals (``(?(1)a|b)``) are refused: no
   bound on their matching time is known.
2. The pattern, parsed by Python's own parser (``re._parser``), becomes a position automaton
   (Glushkov): one state per character it reads (a literal, a class, ``.``). Anchors, ``\\b``
   and lookarounds read nothing (lookaround bodies are checked as patterns of their own);
   a counted repeat (``x{2,3}``, ``x?``) of a part without repeats is written out when it has
   at most :data:`_EXPAND_MAX` copies; any other counts as ``*`` (or ``+``), for a repeat that
   the automaton writes out cannot show as a loop: ``(?:a[ab]?){0,64}`` is as bad as
   ``(?:a[ab]?)*``.
3. The automaton is *exponentially ambiguous* when a word can lead from a state back to itself
   along two different paths: each repetition of that word doubles the ways to match. This is
   refused (the test: the product automaton has a cycle through a state ``(p, p)`` and a state
   ``(p', q')`` with ``p' != q'``).
4. It has *polynomial degree* ``d`` when ``d`` pairs of looping states ``p != q`` can each read
   one word from ``p`` to ``p``, ``p`` to ``q`` and ``q`` to ``q``, one pair after another: the
   time to fail then grows as ``n**(d+1)`` for a name of ``n`` characters. Names are short
   (a tag at most 128 characters, a repository name 255), so ``d <= 1`` (``.*-rc.*``: at most
   ``n**2``) is accepted, ``d >= 2`` refused.
5. Without loops, choices still multiply: ``(a|a)`` written out twenty times matches
   ``aaa...`` in 2**20 ways. Each place where two paths over one word part (a state with
   several next states for one character, or two edges to one state) counts; more than
   :data:`_MAX_CHOICES` doublings along one path are refused.

Characters are compared on a sample alphabet: all of ASCII (every character a registry name
can hold) and a few non-ASCII letters, digits and spaces. The analysis errs on the side of
refusing; it is bounded (:data:`_MAX_STATES`, :data:`_MAX_STEPS`) and refuses a pattern too
large to analyse.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

# Python's own regex parser and compiler: the pattern is read exactly as `re` reads it.
# (Private modules without type stubs; `sre_parse` and friends before Python 3.11.)
sre_parse: Any = importlib.import_module("re._parser")
sre_compile: Any = importlib.import_module("re._compiler")
sre: Any = importlib.import_module("re._constants")

_EXPAND_MAX = 4  # counted repeats of repeat-free parts up to this many copies are written out
_MAX_STATES = 2000  # positions of the automaton: more is "too complex to analyse"
_MAX_STEPS = 100_000  # edges walked by the analysis, all checks together
_MAX_WAYS = 1 << 20  # ways to match counted up to this
_MAX_CHOICES = 16  # at most 2**16 ways to match one name, loops aside

_SAMPLE = [chr(c) for c in range(128)] + list("éßİıſKµ٣१\u00a0\u2028中\U0001f600")

_EXPONENTIAL = (
    "a repeated part of this regex can match the same text in more than one way (as in"
    " (a+)+ or (a|ab|b)*), so a name that does not match takes time exponential in its length;"
    " write it so that each character can be matched one way only, e.g. a+ instead of (a+)+"
)
_POLYNOMIAL = (
    "three or more repeats in this regex can match the same characters (as in .*-.*-.*), so a"
    " name that does not match takes time growing with the cube of its length; make the"
    " repeats exclude what separates them, e.g. [^-]*-[^-]*-.* instead of .*-.*-.*"
)
_FINITE = (
    "this regex has too many ways to match one name (as in (a|a) written out twenty times),"
    " so a name that does not match takes very long to fail; write each part so that it"
    " matches one way only"
)
_BACKREFERENCE = (
    "backreferences (\\1, (?P=name)) and conditionals ((?(1)...)) can take exponential time"
    " to fail; write the regex without them"
)
_TOO_COMPLEX = (
    "this regex is too large to prove that it matches in reasonable time; simplify it, or"
    " split it into several patterns"
)


class _Refuse(Exception):
    """Stop the analysis with this reason."""


@dataclass
class _Automaton:
    """Glushkov automaton: state 0 is the start, state ``i > 0`` the i-th character read."""

    classes: list[int] = field(default_factory=lambda: [0])  # symbols each state reads (bitmask)
    #: state -> next state -> in how many ways (two loops around one character: two ways)
    follow: list[dict[int, int]] = field(default_factory=lambda: [{}])
    lookarounds: list[Any] = field(default_factory=list)  # sre_parse.SubPattern
    _symbols: list[int] | None = None  # one bitmask of sample characters per symbol
    _moves: dict[int, dict[int, list[int]]] = field(default_factory=dict)

    def moves(self, state: int) -> dict[int, list[int]]:
        """For each symbol (a class of characters no state tells apart), where ``state`` goes."""
        if self._symbols is None:
            self._symbols = _symbol_classes(self.classes)
        if state not in self._moves:
            by_symbol: dict[int, list[int]] = {}
            for target in self.follow[state]:
                for symbol, mask in enumerate(self._symbols):
                    if self.classes[target] & mask:
                        by_symbol.setdefault(symbol, []).append(target)
            self._moves[state] = by_symbol
        return self._moves[state]

    def link(self, sources: Ways, targets: Ways, factor: int = 1) -> None:
        """Each source may be followed by each target, in as many more ways as both have."""
        for source, ways in sources.items():
            follow = self.follow[source]
            for target, more in targets.items():
                follow[target] = min(_MAX_WAYS, follow.get(target, 0) + factor * ways * more)

    def add(self, symbols: int) -> int:
        if len(self.classes) > _MAX_STATES:
            raise _Refuse(_TOO_COMPLEX)
        self.classes.append(symbols)
        self.follow.append({})
        return len(self.classes) - 1


Ways = dict[int, int]  # state -> in how many ways (counted up to _MAX_WAYS)


def _ways(*terms: tuple[int, Ways]) -> Ways:
    """The sum of ``factor * ways`` over ``terms``, each count capped at 2."""
    total: Ways = {}
    for factor, ways in terms:
        for state, count in ways.items():
            total[state] = min(_MAX_WAYS, total.get(state, 0) + factor * count)
    return {state: count for state, count in total.items() if count}


@dataclass(frozen=True)
class _Part:
    """A part of the pattern: in how many ways it matches the empty string, and in how many
    ways each state can be the first (the last) character it reads."""

    empty: int
    first: Ways
    last: Ways


_EMPTY = _Part(1, {}, {})


def regex_problem(pattern: str) -> str | None:
    """Why ``pattern`` (which ``re.compile`` accepts) may take too long to run, or None."""
    try:
        parsed = sre_parse.parse(pattern)
    except re.error as exc:  # the caller compiles first; be safe anyway
        return f"invalid regex: {exc}"
    try:
        _check(parsed, parsed.state.flags, _Budget())
    except _Refuse as refused:
        return str(refused)
    except RecursionError:  # a pattern nested hundreds of groups deep
        return _TOO_COMPLEX
    return None


class _Budget:
    def __init__(self) -> None:
        self.steps = 0

    def spend(self, steps: int = 1) -> None:
        self.steps += steps
        if self.steps > _MAX_STEPS:
            raise _Refuse(_TOO_COMPLEX)


def _check(parsed: Any, flags: int, budget: _Budget) -> None:
    automaton = _Automaton()
    builder = _Builder(automaton, parsed.state, budget)
    whole = builder.sequence(list(parsed), flags)
    automaton.link({0: 1}, whole.first)
    for body in automaton.lookarounds:
        _check(body, flags, budget)
    _refuse_ambiguity(automaton, budget)


class _Builder:
    """Builds the automaton from the parsed pattern, one :class:`_Part` at a time."""

    def __init__(self, automaton: _Automaton, state: Any, budget: _Budget) -> None:
        self.automaton = automaton
        self.state = state
        self.budget = budget
        self.symbols = _Symbols()

    def sequence(self, items: Iterable[tuple[Any, Any]], flags: int) -> _Part:
        result = _EMPTY
        for op, av in items:
            result = self.concat(result, self.item(op, av, flags))
        return result

    def concat(self, left: _Part, right: _Part) -> _Part:
        self.budget.spend(len(left.last) * len(right.first))
        self.automaton.link(left.last, right.first)
        return _Part(
            min(_MAX_WAYS, left.empty * right.empty),
            _ways((1, left.first), (left.empty, right.first)),
            _ways((1, right.last), (right.empty, left.last)),
        )

    def item(self, op: object, av: Any, flags: int) -> _Part:
        self.budget.spend()
        if op in (sre.LITERAL, sre.NOT_LITERAL, sre.ANY, sre.IN):
            state = self.automaton.add(self.symbols.of(self.state, (op, av), flags))
            return _Part(0, {state: 1}, {state: 1})
        if op is sre.AT:
            return _EMPTY
        if op in (sre.ASSERT, sre.ASSERT_NOT):
            _, body = av
            self.automaton.lookarounds.append(body)
            return _EMPTY
        if op is sre.SUBPATTERN:
            _, add, remove, body = av
            return self.sequence(body, (flags | add) & ~remove)
        if op is sre.ATOMIC_GROUP:  # at most as ambiguous as the group: checked as one
            return self.sequence(av, flags)
        if op is sre.BRANCH:
            _, branches = av
            return self.branch([self.sequence(b, flags) for b in branches])
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            low, high, body = av
            return self.repeat(low, high, body, flags)
        if op in (sre.GROUPREF, sre.GROUPREF_EXISTS):
            raise _Refuse(_BACKREFERENCE)
        raise _Refuse(_TOO_COMPLEX)  # an operator this analysis does not know

    def branch(self, parts: list[_Part]) -> _Part:
        return _Part(
            min(_MAX_WAYS, sum(p.empty for p in parts)),
            _ways(*((1, p.first) for p in parts)),
            _ways(*((1, p.last) for p in parts)),
        )

    def repeat(self, low: int, high: int, body: Any, flags: int) -> _Part:
        if high == 0:
            return _EMPTY
        if high != sre.MAXREPEAT and high <= _EXPAND_MAX and not _has_repeat(body):
            return self.counted(low, high, body, flags)
        loop = self.sequence(body, flags)
        self.budget.spend(len(loop.last) * len(loop.first))
        # the body may follow itself, directly or after iterations that matched nothing
        again = 1 + loop.empty
        self.automaton.link(loop.last, loop.first, again)
        empty = again if low == 0 else loop.empty * again
        return _Part(min(_MAX_WAYS, empty), _ways((again, loop.first)), _ways((again, loop.last)))

    def counted(self, low: int, high: int, body: Any, flags: int) -> _Part:
        """``body{low,high}`` written out: ``low`` copies, then ``(body(body(...)?)?)?``."""
        result = _EMPTY
        for _ in range(low):
            result = self.concat(result, self.sequence(body, flags))
        optional = _EMPTY
        for _ in range(high - low):  # innermost first: (body optional)?
            optional = self.branch([self.concat(self.sequence(body, flags), optional), _EMPTY])
        return self.concat(result, optional)


_REPEATS = ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT")


def _has_repeat(items: Iterable[tuple[Any, Any]]) -> bool:
    """True when a parsed part holds a repeat (``*``, ``+``, ``?``, ``{m,n}``), at any depth."""
    for op, av in items:
        name = str(op)
        if name in _REPEATS:
            return True
        if name == "SUBPATTERN":
            children = [av[3]]
        elif name == "BRANCH":
            children = av[1]
        elif name in ("ASSERT", "ASSERT_NOT"):
            children = [av[1]]
        elif name == "ATOMIC_GROUP":
            children = [av]
        else:
            continue
        if any(_has_repeat(child) for child in children):
            return True
    return False


class _Symbols:
    """The sample alphabet split into classes of characters no state tells apart."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int], int] = {}

    def of(self, state: Any, atom: tuple[object, object], flags: int) -> int:
        """A bitmask over :data:`_SAMPLE`: which sample characters ``atom`` reads."""
        key = (repr(atom), flags)
        if key not in self._cache:
            matcher = sre_compile.compile(sre_parse.SubPattern(state, [atom]), flags)
            self._cache[key] = sum(
                1 << i for i, char in enumerate(_SAMPLE) if matcher.fullmatch(char)
            )
        return self._cache[key]


# ---------------------------------------------------------------- ambiguity


def _symbol_classes(classes: list[int]) -> list[int]:
    """The sample characters grouped by the states that read them (the states read none)."""
    groups: dict[tuple[bool, ...], int] = {}
    for i in range(len(_SAMPLE)):
        bit = 1 << i
        signature = tuple(bool(c & bit) for c in classes)
        if any(signature):
            groups[signature] = groups.get(signature, 0) | bit
    return list(groups.values())


def _refuse_ambiguity(automaton: _Automaton, budget: _Budget) -> None:
    pairs = _product(automaton, budget)
    if _exponential(pairs, budget):
        raise _Refuse(_EXPONENTIAL)
    if _polynomial_degree(automaton, budget) >= 2:
        raise _Refuse(_POLYNOMIAL)
    if _choices(automaton, pairs, budget) > _MAX_CHOICES:
        raise _Refuse(_FINITE)


Pair = tuple[int, int]


def _step(automaton: _Automaton, states: tuple[int, ...], budget: _Budget) -> set[tuple[int, ...]]:
    """The tuples of states that ``states`` reach together by reading one same character."""
    result: set[tuple[int, ...]] = set()
    moves = [automaton.moves(state) for state in states]
    for symbol, targets in moves[0].items():
        combos: list[tuple[int, ...]] = [(t,) for t in targets]
        for more in moves[1:]:
            others = more.get(symbol)
            if not others:
                combos = []
                break
            budget.spend(len(combos) * len(others))
            combos = [(*c, t) for c in combos for t in others]
        result.update(combos)
    return result


def _product(automaton: _Automaton, budget: _Budget) -> dict[Pair, set[Pair]]:
    """The pair automaton reachable from (start, start): pair -> the pairs it steps to.

    Two paths that take two different edges between the same states (``(a+)+``: the inner and
    the outer loop) are two paths: such a step from ``(p, p)`` also leads to ``(q, -q)``, a
    pair that stands for "in q on both sides, by different ways" and steps like ``(q, q)``.
    """
    graph: dict[Pair, set[Pair]] = {}
    seen: set[Pair] = {(0, 0)}
    todo: list[Pair] = [(0, 0)]
    while todo:
        pair = todo.pop()
        budget.spend()
        left, right = abs(pair[0]), abs(pair[1])
        steps = {(a, b) for a, b in _step(automaton, (left, right), budget)}
        if left == right:
            follow = automaton.follow[left]
            steps |= {(a, -a) for a, b in steps if a == b and follow[a] > 1}
        graph[pair] = steps
        for nxt in steps - seen:
            seen.add(nxt)
            todo.append(nxt)
    return graph


def _exponential(graph: dict[Pair, set[Pair]], budget: _Budget) -> bool:
    """True when one strongly connected component holds a pair (p, p) and a pair (p', q')."""
    for component in _components(graph, budget):
        if len(component) == 1 and component[0] not in graph[component[0]]:
            continue
        if any(a == b for a, b in component) and any(a != b for a, b in component):
            return True
    return False


def _choices(automaton: _Automaton, graph: dict[Pair, set[Pair]], budget: _Budget) -> float:
    """log2 of how many ways to match one word the pattern's choices allow, loops aside.

    Two paths over one word part (leave the diagonal of the pair automaton) where one state
    has several next states for one character, or two edges to one state; without
    exponential ambiguity, a pair of paths cannot come back to part again inside a loop, so
    along the component graph these choices add up: at most ``2 ** result`` ways.
    """
    components = _components(graph, budget)
    where = {pair: n for n, component in enumerate(components) for pair in component}
    best = [0.0] * len(components)
    for n, component in enumerate(components):  # sinks first: successors are done
        for pair in component:
            for nxt in graph[pair]:
                budget.spend()
                if where[nxt] != n:
                    best[n] = max(best[n], best[where[nxt]] + _choice(automaton, pair, nxt))
    return best[where[(0, 0)]]


def _choice(automaton: _Automaton, pair: Pair, nxt: Pair) -> float:
    """log2 of the ways a step from the diagonal to off it multiplies the paths (else 0)."""
    state = abs(pair[0])
    if state != abs(pair[1]) or nxt[0] == nxt[1]:  # from two states, or to one same path
        return 0.0
    if nxt[1] == -nxt[0]:  # one state, reached along several edges
        return math.log2(automaton.follow[state][nxt[0]])
    fan_out = max(len(targets) for targets in automaton.moves(state).values())
    return math.log2(fan_out)


def _components(graph: dict[Pair, set[Pair]], budget: _Budget) -> list[list[Pair]]:
    """Strongly connected components (Tarjan, iterative), each after every component it
    reaches (sinks first)."""
    index: dict[Pair, int] = {}
    low: dict[Pair, int] = {}
    stack: list[Pair] = []
    on_stack: set[Pair] = set()
    result: list[list[Pair]] = []
    for root in graph:
        if root in index:
            continue
        work: list[tuple[Pair, Iterator[Pair]]] = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            advanced = False
            for nxt in edges:
                budget.spend()
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[Pair] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                result.append(component)
    return result


def _polynomial_degree(automaton: _Automaton, budget: _Budget) -> int:
    """The longest chain of "infinitely ambiguous" pairs (p, q), each reachable from the last."""
    reach = _reachability(automaton, budget)
    loops = [s for s in range(1, len(automaton.classes)) if s in reach[s] and s in reach[0]]
    # without exponential ambiguity (refused before), p and q of such a pair are in different
    # strongly connected components: q in reach of p, p not in reach of q
    edges = [
        (p, q)
        for p in loops
        for q in loops
        if q in reach[p] and p not in reach[q] and _ida_pair(automaton, p, q, budget)
    ]
    if not edges:
        return 0
    # longest chain p1 => q1 ~> p2 => q2 ...: edges are between looping states that reach
    # each other forward; a cycle of such edges means unbounded degree (already exponential)
    longest: dict[Pair, int] = {}

    def chain(edge: Pair, depth: int = 0) -> int:
        if edge in longest:
            return longest[edge]
        if depth > len(edges):
            return len(edges) + 1
        best = 1
        for nxt in edges:
            budget.spend()
            if nxt != edge and (nxt[0] == edge[1] or nxt[0] in reach[edge[1]]):
                best = max(best, 1 + chain(nxt, depth + 1))
                if best >= 2:
                    break  # two is enough to refuse
        longest[edge] = best
        return best

    return max(chain(edge) for edge in edges)


def _reachability(automaton: _Automaton, budget: _Budget) -> list[set[int]]:
    """For each state, the states reachable from it in one step or more."""
    result: list[set[int]] = []
    for start in range(len(automaton.classes)):
        seen: set[int] = set()
        todo = list(automaton.follow[start])
        while todo:
            state = todo.pop()
            budget.spend()
            if state not in seen:
                seen.add(state)
                todo.extend(s for s in automaton.follow[state] if s not in seen)
        result.append(seen)
    return result


def _ida_pair(automaton: _Automaton, p: int, q: int, budget: _Budget) -> bool:
    """True when one word leads from p to p, from p to q and from q to q."""
    start: tuple[int, ...] = (p, p, q)
    goal: tuple[int, ...] = (p, q, q)
    seen = {start}
    todo = [start]
    while todo:
        triple = todo.pop()
        for nxt in _step(automaton, triple, budget):
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False
