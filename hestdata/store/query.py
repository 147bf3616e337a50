"""Catalog filters: a condition on a table's columns, in a small query language whose meaning we own.

A ``--where`` string, a task file's ``samples:`` and a HEST-1k query are parsed here into an expression tree over
the table's columns, then turned into a polars expression. Nothing else is evaluated: there are no functions,
no subqueries and no table names, so a shared task file cannot read the disk (polars SQL, used before, has
``read_csv(...)``). Grammar (keywords in any case)::

    condition  := or
    or         := and ("OR" and)*
    and        := not ("AND" not)*
    not        := "NOT" not | "(" condition ")" | predicate
    predicate  := value op value                    op: = == != <> < <= > >=
                | value ["NOT"] "IN" "(" literal ("," literal)* ")"
                | literal ["NOT"] "IN" column        (membership in a list column)
                | column "CONTAINS" literal          (the same)
                | column ["NOT"] ("LIKE" | "ILIKE") 'pattern'     (% any run, _ one character)
                | column ["NOT"] "BETWEEN" literal "AND" literal
                | column "IS" ["NOT"] "NULL"
                | column                             (a boolean column)
    value      := column | literal
    literal    := 'text' ('' inside for a quote) | number | TRUE | FALSE | NULL
    column     := name | "quoted name"              (one of the table's columns)

Anything else is an :class:`InputError` naming the construct and where it is. :func:`evaluate` is an
independent row-by-row evaluator of the same tree (the tests compare the two).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hestdata.errors import InputError

MAX_QUERY_CHARS = 4096
KEYWORDS = {"and", "or", "not", "in", "like", "ilike", "is", "null", "true", "false", "between", "contains"}
REFUSED = {"select": "subqueries", "from": "table references", "join": "joins", "union": "set operations",
           "with": "common table expressions", "case": "CASE expressions", "exists": "subqueries",
           "cast": "casts", "over": "window functions"}
_TOKEN = re.compile(r"""\s*(?:
    (?P<num>-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|-?\.\d+(?:[eE][-+]?\d+)?)
  | (?P<str>'(?:[^']|'')*')
  | (?P<qid>"(?:[^"]|"")+")
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|<>|!=|==|=|<|>)
  | (?P<punct>[(),])
  | (?P<bad>\S)
)""", re.VERBOSE)


@dataclass(frozen=True)
class Col:
    name: str


@dataclass(frozen=True)
class Lit:
    value: Any  # str, int, float, bool or None


@dataclass(frozen=True)
class Node:
    op: str  # and or not cmp in contains like between isnull truthy
    args: tuple[Any, ...]


def _error(where: str, msg: str, pos: int | None = None) -> InputError:
    at = f" at character {pos + 1}" if pos is not None else ""
    return InputError(None, f"query {where!r}: {msg}{at}",
                      "conditions on catalog columns: =, !=, <, <=, >, >=, IN (...), LIKE, BETWEEN, IS NULL, "
                      "CONTAINS, AND, OR, NOT; text in single quotes")


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            break
        kind = m.lastgroup or ""
        val = m.group(kind)
        start = m.start(kind)
        if kind == "bad":
            what = {";": "a second statement", "*": "'*'", "[": "brackets", "{": "braces"}.get(val, repr(val))
            raise _error(text, f"unsupported character {what}", start)
        out.append((kind, val, start))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str, columns: dict[str, Any]) -> None:
        self.text, self.columns = text, columns
        self.toks = _tokens(text)
        self.i = 0

    def peek(self, k: int = 0) -> tuple[str, str, int] | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def kw(self, *words: str) -> bool:
        t = self.peek()
        return t is not None and t[0] == "id" and t[1].lower() in words

    def take(self) -> tuple[str, str, int]:
        t = self.peek()
        if t is None:
            raise _error(self.text, "the condition ends too early")
        self.i += 1
        return t

    def expect(self, kind: str, val: str) -> None:
        t = self.take()
        if t[0] != kind or (t[1].lower() if kind == "id" else t[1]) != val:
            raise _error(self.text, f"expected {val!r}, found {t[1]!r}", t[2])

    def parse(self) -> Any:
        if not self.toks:
            raise _error(self.text, "the condition is empty")
        node = self.or_()
        t = self.peek()
        if t is not None:
            raise _error(self.text, f"unexpected {t[1]!r}", t[2])
        return node

    def or_(self) -> Any:
        parts = [self.and_()]
        while self.kw("or"):
            self.take()
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else Node("or", tuple(parts))

    def and_(self) -> Any:
        parts = [self.not_()]
        while self.kw("and"):
            self.take()
            parts.append(self.not_())
        return parts[0] if len(parts) == 1 else Node("and", tuple(parts))

    def not_(self) -> Any:
        if self.kw("not"):
            self.take()
            return Node("not", (self.not_(),))
        t = self.peek()
        if t is not None and t[1] == "(":
            self.take()
            node = self.or_()
            self.expect("punct", ")")
            return node
        return self.predicate()

    def value(self) -> Any:
        t = self.take()
        kind, val, pos = t
        if kind == "num":
            return Lit(float(val) if any(c in val for c in ".eE") else int(val))
        if kind == "str":
            return Lit(val[1:-1].replace("''", "'"))
        if kind == "qid":
            return self.column(val[1:-1].replace('""', '"'), pos)
        if kind == "id":
            low = val.lower()
            nxt = self.peek()
            if nxt is not None and nxt[1] == "(":
                raise _error(self.text, f"functions are not supported ({val}(...))", pos)
            if low in REFUSED:
                raise _error(self.text, f"{REFUSED[low]} are not supported ({val.upper()})", pos)
            if low in ("true", "false"):
                return Lit(low == "true")
            if low == "null":
                return Lit(None)
            if low in KEYWORDS:
                raise _error(self.text, f"expected a column or a value, found {val.upper()}", pos)
            return self.column(val, pos)
        if val == "(":
            nxt = self.peek()
            if nxt is not None and nxt[0] == "id" and nxt[1].lower() == "select":
                raise _error(self.text, "subqueries are not supported ((SELECT ...))", pos)
            raise _error(self.text, "a value in parentheses is not supported (parentheses group conditions)", pos)
        raise _error(self.text, f"expected a column or a value, found {val!r}", pos)

    def column(self, name: str, pos: int) -> Col:
        if name not in self.columns:
            raise _error(self.text, f"unknown column {name!r} (columns: {', '.join(sorted(self.columns))})", pos)
        return Col(name)

    def literal(self) -> Lit:
        t = self.peek()
        v = self.value()
        if not isinstance(v, Lit):
            raise _error(self.text, "expected a value (a quoted text, a number, TRUE, FALSE or NULL)",
                         t[2] if t else None)
        return v

    def predicate(self) -> Any:
        start = self.peek()
        left = self.value()
        negate = False
        if self.kw("not"):
            self.take()
            negate = True
            if not self.kw("in", "like", "ilike", "between"):
                t = self.peek()
                raise _error(self.text, "NOT here must be followed by IN, LIKE, ILIKE or BETWEEN", t[2] if t else None)
        t = self.peek()
        if t is None or (t[0] == "id" and t[1].lower() in ("and", "or")) or t[1] == ")":
            if negate or not isinstance(left, Col):
                raise _error(self.text, "a condition needs a comparison", start[2] if start else None)
            return Node("truthy", (left,))
        if t[0] == "op":
            self.take()
            op = {"==": "=", "<>": "!="}.get(t[1], t[1])
            right = self.value()
            return Node("cmp", (op, left, right))
        low = t[1].lower() if t[0] == "id" else ""
        if low == "in":
            self.take()
            nxt = self.peek()
            if nxt is not None and nxt[1] == "(":
                self.take()
                if self.kw("select"):
                    raise _error(self.text, "subqueries are not supported (SELECT)", self.peek()[2])  # type: ignore[index]
                items = [self.literal()]
                while self.peek() is not None and self.peek()[1] == ",":  # type: ignore[index]
                    self.take()
                    items.append(self.literal())
                self.expect("punct", ")")
                node = Node("in", (left, tuple(i.value for i in items)))
            else:
                col = self.value()
                if not isinstance(col, Col) or not isinstance(left, Lit):
                    raise _error(self.text, "IN takes a list in parentheses, or a list column after a value",
                                 t[2])
                node = Node("contains", (col, left))
            return Node("not", (node,)) if negate else node
        if low == "contains" and not negate:
            self.take()
            if not isinstance(left, Col):
                raise _error(self.text, "CONTAINS needs a list column on its left", t[2])
            return Node("contains", (left, self.literal()))
        if low in ("like", "ilike"):
            self.take()
            pat = self.literal()
            if not isinstance(left, Col) or not isinstance(pat.value, str):
                raise _error(self.text, f"{low.upper()} compares a column with a quoted pattern", t[2])
            node = Node("like", (left, pat.value, low == "ilike"))
            return Node("not", (node,)) if negate else node
        if low == "between":
            self.take()
            lo = self.literal()
            self.expect("id", "and")
            hi = self.literal()
            node = Node("between", (left, lo.value, hi.value))
            return Node("not", (node,)) if negate else node
        if low == "is" and not negate:
            self.take()
            neg = False
            if self.kw("not"):
                self.take()
                neg = True
            self.expect("id", "null")
            node = Node("isnull", (left,))
            return Node("not", (node,)) if neg else node
        raise _error(self.text, f"unexpected {t[1]!r}", t[2])


def parse(text: str, columns: Any) -> Any:
    """The expression tree of ``text`` over ``columns`` (names, or a name -> dtype mapping)."""
    if not isinstance(text, str):
        raise InputError(None, f"a query must be text, got {type(text).__name__}")
    if len(text) > MAX_QUERY_CHARS:
        raise InputError(None, f"query of {len(text)} characters; at most {MAX_QUERY_CHARS}")
    cols = dict(columns) if hasattr(columns, "items") else dict.fromkeys(columns)
    return _Parser(text, cols).parse()


def _like_regex(pattern: str) -> str:
    return "^" + "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern) + "$"


def to_polars(node: Any, schema: dict[str, Any] | None = None) -> Any:
    """The polars expression of a tree from :func:`parse`."""
    import polars as pl

    def lit(v: Any) -> Any:
        return pl.lit(v)

    def val(x: Any) -> Any:
        return pl.col(x.name) if isinstance(x, Col) else lit(x.value)

    if isinstance(node, Col | Lit):
        return val(node)
    op, a = node.op, node.args
    if op == "and":
        out = to_polars(a[0], schema)
        for x in a[1:]:
            out = out & to_polars(x, schema)
        return out
    if op == "or":
        out = to_polars(a[0], schema)
        for x in a[1:]:
            out = out | to_polars(x, schema)
        return out
    if op == "not":
        return ~to_polars(a[0], schema)
    if op == "truthy":
        return pl.col(a[0].name).cast(pl.Boolean)
    if op == "cmp":
        cmp, left, right = a
        lhs, rhs = val(left), val(right)
        return {"=": lhs == rhs, "!=": lhs != rhs, "<": lhs < rhs, "<=": lhs <= rhs, ">": lhs > rhs,
                ">=": lhs >= rhs}[cmp]
    if op == "in":
        left, items = a
        vals = [v for v in items if v is not None]  # NULL in a list matches nothing (SQL)
        if vals and all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals):
            return val(left).cast(pl.Float64).is_in([float(v) for v in vals])  # 1e3 matches an integer 1000
        return val(left).is_in(vals)
    if op == "contains":
        col, item = a
        return pl.col(col.name).list.contains(item.value if isinstance(item, Lit) else item)
    if op == "like":
        col, pat, ci = a
        return pl.col(col.name).cast(pl.String).str.contains(("(?i)" if ci else "") + _like_regex(pat))
    if op == "between":
        col, lo, hi = a
        return (val(col) >= lo) & (val(col) <= hi)
    if op == "isnull":
        return val(a[0]).is_null()
    raise ValueError(f"unknown node {op}")


def evaluate(node: Any, row: dict[str, Any]) -> bool | None:
    """The tree evaluated on one row with SQL's three-valued logic (None = unknown): a reference for tests."""
    def v(x: Any) -> Any:
        return row[x.name] if isinstance(x, Col) else x.value

    op, a = node.op, node.args
    if op == "and":
        vals = [evaluate(x, row) for x in a]
        return False if False in vals else None if None in vals else True
    if op == "or":
        vals = [evaluate(x, row) for x in a]
        return True if True in vals else None if None in vals else False
    if op == "not":
        r = evaluate(a[0], row)
        return None if r is None else not r
    if op == "truthy":
        x = v(a[0])
        return None if x is None else bool(x)
    if op == "cmp":
        cmp, left, right = a
        x, y = v(left), v(right)
        if x is None or y is None:
            return None
        return {"=": x == y, "!=": x != y, "<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[cmp]
    if op == "in":
        x = v(a[0])
        return None if x is None else x in a[1]
    if op == "contains":
        lst = v(a[0])
        return None if lst is None else v(a[1]) in lst
    if op == "like":
        x = v(a[0])
        return None if x is None else re.search(("(?i)" if a[2] else "") + _like_regex(a[1]), str(x)) is not None
    if op == "between":
        x = v(a[0])
        return None if x is None else a[1] <= x <= a[2]
    if op == "isnull":
        return v(a[0]) is None
    raise ValueError(f"unknown node {op}")


def as_expr(where: Any, columns: Any = ()) -> Any:
    """A polars expression for ``where``: a polars expression (the API's, kept as it is) or query text parsed by
    this module's language against ``columns``."""
    if not isinstance(where, str):
        return where
    return to_polars(parse(where, columns))


def filter_frame(df: Any, where: Any, what: str) -> Any:
    """``df`` filtered by ``where`` (query text or a polars expression); a failure is an :class:`InputError`
    naming ``what`` was queried and its columns."""
    try:
        return df.filter(as_expr(where, df.schema if isinstance(where, str) else ()))
    except InputError:
        raise
    except Exception as exc:  # a type mismatch, e.g. a text column compared with a number
        raise InputError(None, f"query {where!r} on {what} failed: {type(exc).__name__}: {exc}",
                         f"columns: {', '.join(df.columns)}") from None
