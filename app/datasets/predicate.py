"""The predicate language of remediation requests (docs/remediation.md, "Predicates").

    expr       := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | "(" expr ")" | comparison
    comparison := column op literal | column "in" "[" literal ("," literal)* "]"
    op         := == | != | < | <= | > | >=
    literal    := number | "text" | 'text' | true | false
    column     := a name of letters, digits, "_", "." or "-" starting with a letter or "_",
                  or any name between backquotes

A small hand-written recursive-descent parser turns the text into a tree of frozen nodes, typed
against the dataset's columns, and the tree is evaluated with pyarrow compute into a row mask.
Nothing is ever evaluated as code or built into SQL. Errors are 422 problems that name the
problem and its position, never the caller's text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from app.errors import Unprocessable
from app.pii import find_identifier

MAX_LENGTH = 4000
MAX_DEPTH = 16
MAX_COMPARISONS = 64
MAX_LIST = 1000

ColumnType = Literal["number", "string", "bool"]
Value: TypeAlias = float | int | str | bool
_ARROW_OPS = {"==": pc.equal, "!=": pc.not_equal, "<": pc.less, "<=": pc.less_equal, ">": pc.greater,
              ">=": pc.greater_equal}
_PY_OPS = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
           "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<quoted>`[^`]{1,200}`)
  | (?P<name>[A-Za-z_][A-Za-z0-9_.\-]{0,199})
  | (?P<op>==|!=|<=|>=|<|>)
  | (?P<punct>[()\[\],])
""", re.VERBOSE)
KEYWORDS = {"and", "or", "not", "in", "true", "false"}


class PredicateError(Unprocessable):
    """The predicate cannot be parsed or typed; the detail names the problem, not the input."""


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    position: int


@dataclass(frozen=True)
class Comparison:
    column: str
    op: str  # ==, !=, <, <=, >, >= or "in"
    values: tuple[Value, ...]


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class BoolOp:
    op: Literal["and", "or"]
    operands: tuple[Node, ...]


Node: TypeAlias = Comparison | Not | BoolOp


@dataclass(frozen=True)
class Schema:
    """The columns a predicate may name, with their types. `label` is the dataset's label column
    (stored as a class index; compared with the class values), `classes` those values."""

    columns: Mapping[str, ColumnType]
    label: str | None = None
    classes: Sequence[Any] = ()


def tokens(text: str) -> list[Token]:
    if len(text) > MAX_LENGTH:
        raise PredicateError(f"The predicate is longer than {MAX_LENGTH} characters.")
    if not text.strip():
        raise PredicateError("The predicate is empty.")
    out: list[Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise PredicateError(f"Unexpected character at position {position}.")
        kind = match.lastgroup or ""
        if kind != "space":
            out.append(Token(kind, match.group(), position))
        position = match.end()
    return out


class _Parser:
    def __init__(self, items: list[Token]):
        self.items = items
        self.index = 0
        self.comparisons = 0

    def peek(self) -> Token | None:
        return self.items[self.index] if self.index < len(self.items) else None

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "name" and token.text.lower() == word:
            self.index += 1
            return True
        return False

    def punct(self, char: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "punct" and token.text == char:
            self.index += 1
            return True
        return False

    def fail(self, what: str) -> PredicateError:
        token = self.peek()
        where = f"at position {token.position}" if token is not None else "at the end"
        return PredicateError(f"Expected {what} {where}.")

    def parse(self) -> Node:
        node = self.or_(0)
        if self.peek() is not None:
            raise self.fail("'and', 'or' or the end of the predicate")
        return node

    def or_(self, depth: int) -> Node:
        operands = [self.and_(depth)]
        while self.keyword("or"):
            operands.append(self.and_(depth))
        return operands[0] if len(operands) == 1 else BoolOp("or", tuple(operands))

    def and_(self, depth: int) -> Node:
        operands = [self.not_(depth)]
        while self.keyword("and"):
            operands.append(self.not_(depth))
        return operands[0] if len(operands) == 1 else BoolOp("and", tuple(operands))

    def not_(self, depth: int) -> Node:
        if depth >= MAX_DEPTH:
            raise PredicateError(f"The predicate nests deeper than {MAX_DEPTH} levels.")
        if self.keyword("not"):
            return Not(self.not_(depth + 1))
        if self.punct("("):
            node = self.or_(depth + 1)
            if not self.punct(")"):
                raise self.fail("')'")
            return node
        return self.comparison()

    def comparison(self) -> Comparison:
        token = self.peek()
        if token is None or token.kind not in ("name", "quoted") or (
                token.kind == "name" and token.text.lower() in KEYWORDS):
            raise self.fail("a column name")
        self.index += 1
        column = token.text[1:-1] if token.kind == "quoted" else token.text
        self.comparisons += 1
        if self.comparisons > MAX_COMPARISONS:
            raise PredicateError(f"The predicate has more than {MAX_COMPARISONS} comparisons.")
        if self.keyword("in"):
            if not self.punct("["):
                raise self.fail("'[' after 'in'")
            values = [self.literal()]
            while self.punct(","):
                values.append(self.literal())
                if len(values) > MAX_LIST:
                    raise PredicateError(f"An 'in' list holds more than {MAX_LIST} values.")
            if not self.punct("]"):
                raise self.fail("',' or ']'")
            return Comparison(column, "in", tuple(values))
        op = self.peek()
        if op is None or op.kind != "op":
            raise self.fail("a comparison operator (==, !=, <, <=, >, >=, in)")
        self.index += 1
        return Comparison(column, op.text, (self.literal(),))

    def literal(self) -> Value:
        token = self.peek()
        if token is None:
            raise self.fail("a value")
        self.index += 1
        if token.kind == "number":
            number = float(token.text)
            return int(number) if re.fullmatch(r"-?\d+", token.text) and abs(number) < 2**53 else number
        if token.kind == "string":
            return _unquote(token.text)
        if token.kind == "name" and token.text.lower() in ("true", "false"):
            return token.text.lower() == "true"
        self.index -= 1
        raise self.fail("a value (a number, a quoted text, true or false)")


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


def parse(text: str) -> Node:
    """The predicate's tree; PredicateError when it is not in the language or past its limits."""
    node = _Parser(tokens(text)).parse()
    for value in literals(node):
        if isinstance(value, str) and find_identifier(value):
            raise PredicateError("A value of the predicate looks like an e-mail address or phone number; "
                                 "predicates select slices of data, not people.")
    return node


def literals(node: Node) -> list[Value]:
    if isinstance(node, Comparison):
        return list(node.values)
    if isinstance(node, Not):
        return literals(node.operand)
    return [value for operand in node.operands for value in literals(operand)]


def columns_of(node: Node) -> set[str]:
    if isinstance(node, Comparison):
        return {node.column}
    if isinstance(node, Not):
        return columns_of(node.operand)
    return {column for operand in node.operands for column in columns_of(operand)}


def _value_type(value: Value) -> ColumnType:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "string"


def check(node: Node, schema: Schema) -> None:
    """Every column is known and every value has its column's type."""
    if isinstance(node, Not):
        check(node.operand, schema)
        return
    if isinstance(node, BoolOp):
        for operand in node.operands:
            check(operand, schema)
        return
    if node.column == schema.label:
        kinds = {_value_type(c) for c in schema.classes}
        wanted: ColumnType = "number" if kinds == {"number"} or kinds == {"bool"} else "string"
        if kinds == {"bool"}:
            wanted = "bool"
    elif node.column in schema.columns:
        wanted = schema.columns[node.column]
    else:
        raise PredicateError("The predicate names a column the dataset does not have "
                             "(predicates may use the features, the label, record_id and the metadata columns).")
    for value in node.values:
        if _value_type(value) != wanted:
            raise PredicateError(f"A value compared with column '{node.column}' is not of its type ({wanted}).")
    if wanted == "bool" and node.op not in ("==", "!=", "in"):
        raise PredicateError(f"Column '{node.column}' is true or false; compare it with == or != only.")


def evaluate(node: Node, table: pa.Table, schema: Schema) -> pa.Array:
    """The rows of `table` (a dataset version's stored table) the predicate selects, as a boolean
    array without nulls (a null never matches)."""
    if isinstance(node, Not):
        return pc.invert(evaluate(node.operand, table, schema))
    if isinstance(node, BoolOp):
        combine = pc.and_ if node.op == "and" else pc.or_
        result = evaluate(node.operands[0], table, schema)
        for operand in node.operands[1:]:
            result = combine(result, evaluate(operand, table, schema))
        return result
    if node.column == schema.label:
        # The stored label is the class index: the classes the comparison keeps, then their indices.
        chosen = [index for index, value in enumerate(schema.classes) if _class_matches(node, value)]
        mask = pc.is_in(table.column("label"), value_set=pa.array(chosen, pa.int64()))
    else:
        values = table.column(node.column)
        if node.op == "in":
            value_set = pa.array(list(node.values))
            if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
                value_set = value_set.cast(pa.float64())
                values = values.cast(pa.float64())
            mask = pc.is_in(values, value_set=value_set)
        else:
            value = node.values[0]
            scalar = pa.scalar(float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) \
                else pa.scalar(value)
            if pa.types.is_floating(scalar.type):
                values = values.cast(pa.float64())
            mask = _ARROW_OPS[node.op](values, scalar)
    return pc.fill_null(mask.combine_chunks() if isinstance(mask, pa.ChunkedArray) else mask, False)


def _class_matches(node: Comparison, value: Any) -> bool:
    if node.op == "in":
        return any(value == v for v in node.values)
    try:
        return bool(_PY_OPS[node.op](value, node.values[0]))
    except TypeError:
        return False


def column_type(kind: pa.DataType) -> ColumnType | None:
    """A stored column's type in the language; None for types predicates cannot compare."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_boolean(kind):
        return "bool"
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return "number"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "string"
    return None


def schema_of(arrow: pa.Schema, *, metadata: Sequence[str], features: Sequence[str], label: str,
              classes: Sequence[Any]) -> Schema:
    """What a dataset version's predicates may name: record_id, the features, the label (by the
    dataset's label column name) and the metadata columns; never subject_key."""
    columns: dict[str, ColumnType] = {"record_id": "number"}
    columns.update({name: "number" for name in features})  # stored as float32
    for name in metadata:
        # A table read for one predicate holds only the columns it names.
        kind = column_type(arrow.field(name).type) if name in arrow.names else None
        if kind is not None:
            columns[name] = kind
    return Schema(columns=columns, label=label, classes=tuple(classes))


def compile_predicate(text: str, schema: Schema) -> Node:
    node = parse(text)
    check(node, schema)
    return node


def render(node: Node) -> str:
    """The canonical text of a tree (what certificates carry)."""
    if isinstance(node, Not):
        return f"not ({render(node.operand)})"
    if isinstance(node, BoolOp):
        return f" {node.op} ".join(f"({render(operand)})" if isinstance(operand, BoolOp) else render(operand)
                                   for operand in node.operands)
    column = node.column if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", node.column) and \
        node.column.lower() not in KEYWORDS else f"`{node.column}`"
    if node.op == "in":
        return f"{column} in [{', '.join(_literal(v) for v in node.values)}]"
    return f"{column} {node.op} {_literal(node.values[0])}"


def _literal(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
