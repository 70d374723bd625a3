"""Parse `.ddp` / `.ddir` programs and closed terms into the AST.

Lark (LALR, contextual lexer) builds a parse tree; :class:`_Builder` walks
it top-down into :mod:`ddir.lang.ast` / :mod:`ddir.terms.ast` nodes. The walk
is top-down (not a Lark ``Transformer``) because resolving named case
binders to de Bruijn indices needs the enclosing binders on the way down.
Every problem becomes a :class:`ProgramError` with ``file:line:col``.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import re

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput

from . import ast as A
from . import shapes as S
from . import tables
from .errors import ProgramError
from .syntax_errors import describe_unexpected
from .words import name_word_problem
from ..terms import ast as T
from ..values import INT_MAX, Float

# How deeply terms and collection expressions may nest, and (counted apart)
# how deeply scopes may nest. Flat chains (``a && b && ...``, ``1 + 2 + ...``,
# ``x | map(...) | ...``) do not count; only real nesting does, which no
# sensible program takes this far, and every stage below recurses over it:
# lowering and the codec over terms, code generation, explain and the
# engine's scope runner (about three frames a scope level) over scopes.
MAX_NESTING = 100

__all__ = ["parse_program", "parse_program_file", "parse_term", "syntax_of"]


def syntax_of(path: str) -> str:
    """``ddp`` for names ending in ``.ddp``, otherwise ``ddir`` (SPEC A6)."""
    return "ddp" if str(path).endswith(".ddp") else "ddir"


@functools.lru_cache(maxsize=None)
def _parser(syntax: str) -> Lark:
    return tables.load(syntax)


def parse_program_file(path: str) -> A.Program:
    """Read and parse a program file (``OSError`` propagates to the caller)."""
    with open(path, encoding="utf-8") as f:
        source = f.read()
    return parse_program(source, str(path))


def parse_program(source: str, file: str = "<program>", syntax: str | None = None) -> A.Program:
    guessed = syntax is None and not str(file).endswith((".ddp", ".ddir"))
    syntax = syntax or syntax_of(file)
    try:
        tree = _parse(source, file, syntax, "start")
    except ProgramError as e:
        if guessed and file != "<program>":
            raise _with_syntax_hint(e, source, file) from None
        raise
    builder = _Builder(file, source, syntax)
    builder.collect_constructors(tree)
    return A.Program(file=file, body=tuple(builder.statements(tree.children)), source=source)


def _with_syntax_hint(error: ProgramError, source: str, file: str) -> ProgramError:
    """A file named neither `.ddp` nor `.ddir` is read as `.ddir` (SPEC A6);
    say so, and say when it would parse as `.ddp` (issue 26: a `.ddp`
    program saved as `reach_as.txt` got a `.ddir` syntax error, no hint)."""
    try:
        _parse(source, file, "ddp", "start")
        other = "; it parses as `.ddp`: name the file `.ddp`"
    except ProgramError:
        other = ""
    return ProgramError(f"{error.message} (read as `.ddir`: the file name does not end in "
                        f"`.ddp`{other})", error.file, error.line, error.col, error.source)


def parse_term(source: str, file: str = "<term>", value: bool = False) -> T.Term:
    """Parse one term (used for values on the command line). With ``value``,
    a syntax error does not offer `$n`, `^k` or `case`: a value cannot use
    `$n`, and `^k`/`case` are never what a value is missing."""
    tree = _parse(source, file, "ddp", "term", hide=_NOT_FOR_VALUES if value else ())
    builder = _Builder(file, source, "ddp")
    builder.value = value
    return builder.term(tree, ())


_NOT_FOR_VALUES = ("ROW", "BOUND", "CASE", "AT")


def _parse(source: str, file: str, syntax: str, start: str, hide=()):
    try:
        return _parser(syntax).parse(source, start=start)
    except UnexpectedInput as e:
        message, line, col = describe_unexpected(e, _parser(syntax), source, hide)
        before = source.split("\n")[line - 1][:col - 1]  # Lark counts lines at \n only
        if syntax == "ddir" and re.fullmatch(r"\s*con\s+", before):
            # `con A(1) = 0;` reads as the start of a scope named `con` there
            message = "constructor declarations (`con`) exist only in `.ddp` programs"
        raise ProgramError(message, file, line, col, source) from None


def _unwrap_parens(node):
    """``((( e )))`` -> ``e`` without recursion: parentheses around a whole
    expression add tree levels but no meaning (SPEC B: 1,000 of them work)."""
    while (node.data == "expr" and len(node.children) == 1 and node.children[0].data == "concat"
           and len(node.children[0].children) == 1 and isinstance(node.children[0].children[0], Tree)
           and node.children[0].children[0].data == "expr"):
        node = node.children[0].children[0]
    return node


def _shown_name(name: str) -> str:
    """``name`` in double quotes, control characters escaped."""
    return '"' + "".join(c if c.isprintable() else c.encode("unicode_escape").decode()
                         for c in name) + '"'


# The built-in sums, unless a declaration shadows their constructors (SPEC D2).
_BUILTIN_SUMS = {
    "Option": S.SumShape((S.UNIT, None), "Option", ("None", "Some")),
    "Result": S.SumShape((None, None), "Result", ("Ok", "Err")),
}
_BUILTIN_CTORS = {"None": ("Option", 0), "Some": ("Option", 1), "Ok": ("Result", 0),
                  "Err": ("Result", 1)}


def _lane(sum_: S.SumShape, tag: int):
    """The payload shape of ``tag``; None where any payload goes (the
    built-in ``Some``, ``Ok``, ``Err``: their lane is the one argument)."""
    return sum_.lanes[tag]


def _loc(node) -> tuple:
    if isinstance(node, Token):
        return (node.line, node.column)
    return (node.meta.line, node.meta.column)


class _Frame:
    """One enclosing binder scope while building terms: a case arm (1 slot,
    ``names`` maps binder name -> payload field) or a fold step (2 slots)."""

    __slots__ = ("slots", "names")

    def __init__(self, slots: int, names: dict):
        self.slots = slots
        self.names = names


class _Builder:
    def __init__(self, file: str, source: str, syntax: str):
        self.file = file
        self.source = source
        self.syntax = syntax
        self.constructors: dict[str, tuple] = {}  # name -> (arity, tag)
        self.types: dict[str, S.SumShape] = {}  # declared `type`s so far, by name
        self.type_ctors: dict[str, list] = {}  # constructor name -> [(type name, tag)]
        self.depth = 0  # nesting of the term or expression being built
        self.scope_depth = 0  # nesting of the scope whose statements are being built
        self.value = False  # a command-line value: no `@f(...)` calls

    def error(self, message: str, node) -> ProgramError:
        line, col = _loc(node)
        return ProgramError(message, self.file, line, col, self.source)

    # -------------------------------------------------------- constructors

    def collect_constructors(self, tree: Tree) -> None:
        """``con`` declarations are file-wide and may appear anywhere."""
        for con in tree.find_data("con"):
            name, arity, tag = con.children
            if name in self.constructors:
                raise self.error(f"constructor `{name}` is declared twice", name)
            if name in T.BUILTIN_ARITY or name in ("fold", "case"):
                raise self.error(f"`{name}` is a builtin and cannot name a constructor", name)
            self.constructors[str(name)] = (self.int_token(arity), self.int_token(tag))

    # -------------------------------------------------------- types and shapes

    def declare_type(self, node: Tree) -> None:
        """``type Name = Ctor [shape] | ...;`` (SPEC D2): parse time only."""
        name_tok, *ctor_nodes = node.children
        name = str(name_tok)
        if name in self.types:
            raise self.error(f"type `{name}` is declared twice", name_tok)
        if name in S.PRIM_NAMES or name in S.SHAPE_FUNCTIONS:
            raise self.error(f"`{name}` is a built-in shape and cannot name a type", name_tok)
        names, lanes = [], []
        for ctor in ctor_nodes:
            ctor_tok, shape_node = ctor.children
            ctor_name = str(ctor_tok)
            if ctor_name in names:
                raise self.error(f"type `{name}` declares `{ctor_name}` twice", ctor_tok)
            if ctor_name in self.constructors:
                raise self.error(f"`{ctor_name}` is already a constructor declared with `con`",
                                 ctor_tok)
            if ctor_name in T.BUILTIN_ARITY or ctor_name in ("fold", "case"):
                raise self.error(f"`{ctor_name}` is a builtin and cannot name a constructor",
                                 ctor_tok)
            names.append(ctor_name)
            lanes.append(S.UNIT if shape_node is None else self.shape(shape_node, name))
        self.types[name] = S.SumShape(tuple(lanes), name, tuple(names))
        for tag, ctor_name in enumerate(names):
            self.type_ctors.setdefault(ctor_name, []).append((name, tag))

    def ascription(self, node) -> S.RowShape | None:
        """``: (K ; V)``."""
        if node is None:
            return None
        key, val = node.children
        return S.RowShape(self.shape(key), self.shape(val))

    def shape(self, node: Tree, declaring: str | None = None, depth: int = 0) -> S.Shape:
        if depth >= MAX_NESTING:
            raise self.error(f"shape nested more than {MAX_NESTING} levels deep", node)
        kind = node.data
        if kind == "shape_tuple":
            return S.TupleShape(tuple(self.shape(c, declaring, depth + 1)
                                      for c in node.children if c is not None))
        name_tok, *arg_nodes = node.children
        args = None
        if kind == "shape_call":
            args = [self.shape(c, declaring, depth + 1) for c in arg_nodes]
        if str(name_tok) == declaring:
            raise self.error(f"type `{declaring}` cannot contain itself (types are not "
                             "recursive; a List of it is not possible either)", name_tok)
        try:
            return S.make(str(name_tok), args, self.types)
        except S.ShapeError as e:
            raise self.error(str(e), name_tok) from None

    def sum_type(self, name_tok: Token) -> S.SumShape:
        """The sum a type name stands for in ``Type::Ctor`` or ``variant``."""
        name = str(name_tok)
        if name in self.types:
            return self.types[name]
        if name in _BUILTIN_SUMS:
            return _BUILTIN_SUMS[name]
        known = ", ".join(f"`{t}`" for t in self.types) or "none so far"
        raise self.error(f"unknown type `{name}` (the types declared: {known})", name_tok)

    def resolve_ctor(self, qual, name_tok: Token):
        """What a constructor name means: ``("con", arity, tag)`` for a
        ``con`` declaration, ``("type", sum, tag)`` for a declared or
        built-in type's; None when the name is no constructor."""
        name = str(name_tok)
        if qual is not None:
            sum_ = self.sum_type(qual)
            if name not in sum_.ctors:
                raise self.error(f"type `{sum_.name}` has no constructor `{name}` (it has "
                                 f"{', '.join(f'`{c}`' for c in sum_.ctors)})", name_tok)
            return ("type", sum_, sum_.ctors.index(name))
        if name in self.constructors:
            arity, tag = self.constructors[name]
            return ("con", arity, tag)
        declared = self.type_ctors.get(name)
        if declared:
            if len(declared) > 1:
                types = ", ".join(f"`{t}`" for t, _ in declared)
                raise self.error(f"constructor `{name}` is declared by {len(declared)} types "
                                 f"({types}): write `Type::{name}`", name_tok)
            type_name, tag = declared[0]
            return ("type", self.types[type_name], tag)
        if name in _BUILTIN_CTORS:
            type_name, tag = _BUILTIN_CTORS[name]
            return ("type", _BUILTIN_SUMS[type_name], tag)
        return None

    def construct(self, ctor, name_tok: Token, arg_nodes, env: tuple) -> T.Term:
        """``Ctor(args)``: ``inject(tag, payload)``."""
        name = str(name_tok)
        n = len(arg_nodes)
        if ctor[0] == "con":
            _, arity, tag = ctor
            if n != arity:
                raise self.error(f"constructor `{name}` takes {arity} argument(s), got {n}", name_tok)
            args = tuple(self.term(a, env) for a in arg_nodes)
            return T.Call("inject", (T.Lit(tag), T.Call("tuple", args)))
        _, sum_, tag = ctor
        shape = _lane(sum_, tag)
        if shape == S.UNIT:
            if n:
                raise self.error(f"constructor `{name}` takes no payload, got {n} argument(s)",
                                 name_tok)
            return T.Call("inject", (T.Lit(tag), T.Call("tuple", ())))
        if isinstance(shape, S.TupleShape) and len(shape.fields) != 1 and n == len(shape.fields):
            args = tuple(self.term(a, env) for a in arg_nodes)
            return T.Call("inject", (T.Lit(tag), T.Call("tuple", args)))
        if n != 1:
            if isinstance(shape, S.TupleShape):
                want = f"{len(shape.fields)} arguments (one per field of {S.show(shape)}) or one tuple"
            else:
                want = "one argument (its payload)"
            raise self.error(f"constructor `{name}` takes {want}, got {n}", name_tok)
        return T.Call("inject", (T.Lit(tag), self.term(arg_nodes[0], env)))

    def typed_variant(self, name_tok: Token, arg_nodes, env: tuple) -> T.Term:
        """``variant(Type, tag, payload)``: a tag computed per row."""
        type_node = arg_nodes[0]
        if not (isinstance(type_node, Tree) and type_node.data == "binder"):
            raise self.error(f"`{name_tok}` with three arguments takes a type name first: "
                             f"`{name_tok}(Type, tag, payload)`", name_tok)
        sum_ = self.sum_type(type_node.children[0])
        tag = self.term(arg_nodes[1], env)
        if isinstance(tag, T.Lit) and type(tag.value) is int and \
                not 0 <= tag.value < len(sum_.lanes):
            raise self.error(f"type `{sum_.name}` has no tag {tag.value} (its tags are 0 to "
                             f"{len(sum_.lanes) - 1})", name_tok)
        return T.Call("inject", (tag, self.term(arg_nodes[2], env)))

    # -------------------------------------------------------- statements

    def statements(self, nodes) -> list:
        out = []
        for node in nodes:
            if node.data == "con":
                continue
            if node.data == "type_decl":  # in textual order: a type is known after it
                self.declare_type(node)
                continue
            out.append(self.statement(node))
        return out

    def statement(self, node: Tree):
        kind = node.data
        first = node.children[0]
        if kind == "let":
            return A.Let(str(first), self.expr(node.children[1]), _loc(first))
        if kind == "var":
            if len(node.children) == 2:  # .ddir: no ascriptions
                return A.Var(str(first), self.expr(node.children[1]), _loc(first))
            shape = self.ascription(node.children[1])
            return A.Var(str(first), self.expr(node.children[2]), _loc(first), shape)
        if kind == "export":
            name = str(first)[1:-1]
            problem = name_word_problem(name)
            if problem:  # peek, save, subscribe take it as one word of a command line
                raise self.error(f"export {_shown_name(name)} cannot be named in a command: "
                                 f"{problem}", first)
            if len(node.children) == 2:
                return A.Export(name, self.expr(node.children[1]), _loc(first))
            shape = self.ascription(node.children[1])
            return A.Export(name, self.expr(node.children[2]), _loc(first), shape)
        if kind == "scope":
            if self.scope_depth >= MAX_NESTING:
                raise self.error(f"scope `{first}` nested more than {MAX_NESTING} levels deep; "
                                 "flatten the scopes", first)
            body = [c for c in node.children[1:] if isinstance(c, Tree)]
            self.scope_depth += 1
            try:
                return A.ScopeDecl(str(first), tuple(self.statements(body)), _loc(first))
            finally:
                self.scope_depth -= 1
        raise AssertionError(kind)

    # -------------------------------------------------------- collections

    def expr(self, node):
        node = _unwrap_parens(node)
        if self.depth >= MAX_NESTING:
            raise self.error(f"expression nested more than {MAX_NESTING} levels deep; "
                             "name the inner parts with `let`", node)
        self.depth += 1
        try:
            return self._expr(node)
        finally:
            self.depth -= 1

    def _expr(self, node):
        kind = node.data
        c = node.children
        loc = _loc(node)
        if kind == "expr":  # .ddp: concat ('|' op)*
            result = self.expr(c[0])
            for op in c[1:]:
                result = self.op(op, result)
            return result
        if kind == "concat":
            if len(c) == 1:
                return self.expr(c[0])
            parts = [self.expr(c[0])]
            for sign, atom in zip(c[1::2], c[2::2]):
                part = self.expr(atom)
                if sign == "-":
                    part = A.Op("negate", part, _loc(sign))
                parts.append(part)
            return A.Concat(tuple(parts), loc)
        if kind == "joinarg":
            result = self.expr(c[0])
            for op in c[1:]:
                result = self.op(op, result)
            return result
        if kind == "input":
            shape = self.ascription(c[1]) if len(c) > 1 else None
            return A.Input(self.int_token(c[0]), loc, shape)
        if kind == "import_":
            shape = self.ascription(c[1]) if len(c) > 1 else None
            return A.Import(str(c[0])[1:-1], loc, _loc(c[0]), shape)
        if kind == "ref":
            return A.Ref(str(c[0]), loc)
        if kind == "field_ref":
            return A.FieldRef(str(c[0]), str(c[1]), loc)
        if kind.startswith("app_"):
            return self.applicative(kind[4:], c, loc)
        raise AssertionError(kind)

    def op(self, node: Tree, source):
        kind = node.data[3:]
        c = node.children
        loc = _loc(node)
        if kind == "map":
            return A.Op("map", source, loc, proj=self.proj(c[1], 2))
        if kind == "join":
            return A.Op("join", source, loc, other=self.expr(c[0]), proj=self.proj(c[1], 3))
        if kind == "reduce":
            return A.Op(str(c[0]), source, loc)
        if kind in ("filter", "flatmap", "enter_at"):
            return A.Op(kind, source, loc, term=self.term(c[0], ()))
        if kind in ("negate", "arrange", "lift_iter"):
            return A.Op(kind, source, loc)
        if kind == "inspect":
            return A.Op("inspect", source, loc, label=str(c[0]))
        if kind == "value":  # the val becomes the term itself, the key is kept (SPEC D2)
            return A.Op("value", source, loc,
                        proj=A.Proj((T.Row(0),), (self.term(c[0], ()),), bare=True))
        raise AssertionError(kind)

    def applicative(self, kind: str, c, loc):
        if kind == "map":
            return A.Op("map", self.expr(c[0]), loc, proj=self.proj(c[1], 2))
        if kind == "join":
            return A.Op("join", self.expr(c[0]), loc, other=self.expr(c[1]),
                        proj=self.proj(c[2], 3))
        if kind == "reduce":
            return A.Op(str(c[1]).lower(), self.expr(c[0]), loc)
        if kind == "concat":
            parts = tuple(self.expr(x) for x in c)
            return parts[0] if len(parts) == 1 else A.Concat(parts, loc)
        if kind in ("negate", "arrange", "lift_iter"):
            return A.Op(kind, self.expr(c[0]), loc)
        if kind in ("filter", "enter_at", "flatmap"):
            return A.Op(kind, self.expr(c[0]), loc, term=self.term(c[1], ()))
        if kind == "inspect":
            return A.Op("inspect", self.expr(c[0]), loc, label=str(c[1]))
        raise AssertionError(kind)

    def proj(self, node: Tree, nrows: int) -> A.Proj:
        key_node, val_node = node.children
        return A.Proj(self.fields(key_node), self.fields(val_node))

    def fields(self, node) -> tuple:
        if node is None:
            return ()
        out = []
        for f in node.children:
            if isinstance(f, Tree) and f.data == "row":
                out.append(A.Splice(int(str(f.children[0])[1:])))
            else:
                out.append(self.term(f, ()))
        return tuple(out)

    # -------------------------------------------------------- terms

    def int_token(self, tok: Token) -> int:
        n = int(str(tok))
        if n > INT_MAX:
            raise self.error(f"integer literal {n} does not fit in 64 bits", tok)
        return n

    def term(self, node, env: tuple) -> T.Term:
        if self.depth >= MAX_NESTING:
            raise self.error(f"term nested more than {MAX_NESTING} levels deep; split it up "
                             "(long chains of `&&`, `+`, `-` or `*` are fine)", node)
        self.depth += 1
        try:
            return self._term(node, env)
        finally:
            self.depth -= 1

    def _term(self, node, env: tuple) -> T.Term:
        if isinstance(node, Token):  # only reachable through bare tokens in ?rules
            raise self.error(f"unexpected `{node}`", node)
        kind = node.data
        c = node.children
        if kind == "row":
            return T.Row(int(str(c[0])[1:]))
        if kind == "bound":
            k = int(str(c[0])[1:])
            if k >= sum(f.slots for f in env):
                raise self.error(f"`^{k}` has no enclosing `fold` or `case` binder", c[0])
            return T.Bound(k)
        if kind == "int_lit":
            return T.Lit(self.int_token(c[0]))
        if kind == "float_lit":
            return T.Lit(self.float_token(c[0]))
        if kind == "text_lit":
            return T.Lit(self.text_token(c[0]))
        if kind == "neg":
            inner = c[0]
            if isinstance(inner, Tree) and inner.data == "float_lit" and "(" not in \
                    self.source[node.meta.start_pos:inner.children[0].start_pos]:
                return T.Lit(Float(-self.float_token(inner.children[0])))  # `-0.0` is a literal
            # -9223372036854775808 is a literal; -(9223372036854775808) is the minus
            # of a literal that does not fit (SPEC A1, A2)
            if isinstance(inner, Tree) and inner.data == "int_lit" and "(" not in \
                    self.source[node.meta.start_pos:inner.children[0].start_pos]:
                n = int(str(inner.children[0]))
                if n > INT_MAX + 1:
                    raise self.error(f"integer literal -{n} does not fit in 64 bits", inner.children[0])
                return T.Lit(-n)
            return T.Neg(self.term(inner, env))
        if kind == "arith":  # a left-recursive chain: walk its spine, no recursion
            rest = []
            while isinstance(node, Tree) and node.data == "arith" and \
                    (node.children[1] == "*") == (c[1] == "*"):
                rest.append(node.children[1:])
                node = node.children[0]
            first = self.term(node, env)
            return T.Arith(first, tuple((str(op), self.term(t, env)) for op, t in reversed(rest)))
        if kind == "cmp":
            return T.Cmp(str(c[1]), self.term(c[0], env), self.term(c[2], env))
        if kind == "and_chain":
            return T.And(tuple(self.term(x, env) for x in c))
        if kind == "index":
            return T.Index(self.term(c[0], env), self.int_token(c[1]))
        if kind == "binder":
            return self.binder(c[0], env)
        if kind == "call":
            args = [] if c[1:] == [None] else c[1:]
            return self.call(c[0], args, env)
        if kind in ("qualified", "qualified_call"):  # `Type::Ctor`, `Type::Ctor(...)`
            args = [] if c[2:] == [None] else c[2:]
            return self.construct(self.resolve_ctor(c[0], c[1]), c[1], args, env)
        if kind == "case":
            return self.case(c[0], c[1:], env, node)
        if kind == "pycall":  # `@f(...)`: checked against the server's functions at install
            if self.value:
                raise self.error("a value cannot call a Python function (`@f(...)`)", node)
            args = [] if c[1:] == [None] else c[1:]
            line, col = _loc(node)
            return T.PyCall(str(c[0]), tuple(self.term(a, env) for a in args), line, col)
        raise AssertionError(kind)

    def float_token(self, tok: Token) -> Float:
        x = float(str(tok))
        if math.isinf(x):
            raise self.error(f"float literal {tok} does not fit in a 64-bit float", tok)
        return Float(x)

    def text_token(self, tok: Token) -> str:
        """A String literal: JSON's escapes (``\\"``, ``\\\\``, ``\\n``,
        ``\\u00e9``...)."""
        try:
            text = json.loads(str(tok), strict=False)
        except json.JSONDecodeError as e:
            line, col = _loc(tok)
            bad = str(tok)[e.pos:e.pos + 2]
            raise ProgramError(f"bad escape `{bad}` in a string literal (the escapes are "
                               "\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)",
                               self.file, line, col + e.pos, self.source) from None
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise self.error("a string literal holds a lone surrogate (`\\ud800`-`\\udfff` "
                             "must come in pairs)", tok)
        return text

    def binder(self, name: Token, env: tuple) -> T.Term:
        k = 0
        for frame in reversed(env):
            if str(name) in frame.names:
                field = frame.names[str(name)]
                return T.Bound(k) if field is None else T.Index(T.Bound(k), field)
            k += frame.slots
        ctor = self.resolve_ctor(None, name)
        if ctor is not None and ctor[0] == "type":  # a bare constructor: `Empty`, `None`
            return self.construct(ctor, name, [], env)
        if str(name) in self.constructors or str(name) in T.BUILTIN_ARITY:
            raise self.error(f"`{name}` needs arguments: write `{name}(...)`", name)
        if str(name) in self.types or str(name) in _BUILTIN_SUMS:
            raise self.error(f"`{name}` is a type, not a value: build one with a constructor "
                             f"(`{name}::Ctor(...)`)", name)
        raise self.error(f"unknown name `{name}` (not a case binder in scope)", name)

    def call(self, name_tok: Token, arg_nodes, env: tuple) -> T.Term:
        name = str(name_tok)
        n = len(arg_nodes)
        ctor = self.resolve_ctor(None, name_tok)
        if ctor is not None:
            return self.construct(ctor, name_tok, arg_nodes, env)
        if name in ("variant", "inject") and n == 3:
            return self.typed_variant(name_tok, arg_nodes, env)
        if name == "fold":
            if n != 3:
                raise self.error(f"`fold` takes 3 arguments (list, init, step), got {n}", name_tok)
            return T.Fold(self.term(arg_nodes[0], env), self.term(arg_nodes[1], env),
                          self.term(arg_nodes[2], env + (_Frame(2, {}),)))
        if name == "case" and self.syntax == "ddir":
            if n < 2:
                raise self.error("`case` takes a variant and at least one arm", name_tok)
            arm_env = env + (_Frame(1, {}),)
            arms = tuple((i, self.term(a, arm_env)) for i, a in enumerate(arg_nodes[1:]))
            return T.Case(self.term(arg_nodes[0], env), arms, None)
        if name not in T.BUILTIN_ARITY:
            known = [*T.BUILTIN_ARITY, *self.constructors, *self.type_ctors, "fold"]
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            raise self.error(f"unknown function or constructor `{name}`{hint}", name_tok)
        expected = T.BUILTIN_ARITY[name]
        if name == "hash":
            if n < 2:
                raise self.error(f"`hash` takes a bound and at least one key, got {n} argument(s)", name_tok)
        elif expected is not None and n != expected:
            raise self.error(f"`{name}` takes {expected} argument(s), got {n}", name_tok)
        if name in ("proj", "istag"):
            literal_at = 1 if name == "proj" else 0
            lit = self.term(arg_nodes[literal_at], env)
            if not (isinstance(lit, T.Lit) and type(lit.value) is int and lit.value >= 0):
                raise self.error(f"`{name}` needs a non-negative integer literal as argument "
                                 f"{literal_at + 1}", name_tok)
        args = tuple(self.term(a, env) for a in arg_nodes)
        if name == "proj":
            return T.Index(args[0], args[1].value)
        return T.Call("inject" if name == "variant" else name, args)

    def case(self, scrutinee, arm_nodes, env: tuple, node) -> T.Term:
        arms = []
        default = None
        seen = set()
        over = None  # the type the arms' constructors belong to (None: `con`s)
        for arm in arm_nodes:
            if arm is None:  # the optional trailing comma placeholder
                continue
            if arm.data == "default_arm":
                if default is not None:
                    raise self.error("`case` has two `_` arms", arm)
                default = self.term(arm.children[0], env)
                continue
            first, second, binders_node, body_node = arm.children
            ctor_tok, qual = (second, first) if second is not None else (first, None)
            binders = [] if binders_node is None else \
                [str(b.children[0]) for b in binders_node.children if b is not None]
            ctor = self.resolve_ctor(qual, ctor_tok)
            if ctor is None:
                raise self.error(f"unknown constructor `{ctor_tok}` in `case` arm", ctor_tok)
            if ctor[0] == "con":
                _, arity, tag = ctor
                if len(binders) != arity:
                    raise self.error(f"constructor `{ctor_tok}` has {arity} field(s) but the arm "
                                     f"binds {len(binders)}", ctor_tok)
                fields = list(range(arity))
                sum_ = None
            else:
                _, sum_, tag = ctor
                fields = self.arm_fields(ctor_tok, _lane(sum_, tag), binders)
            if arms or seen:
                if (sum_ is None) != (over is None) or (sum_ is not None and sum_ is not over):
                    raise self.error(f"`case` arms mix constructors of different types "
                                     f"(`{ctor_tok}` is {_type_words(sum_)}, an earlier arm's "
                                     f"is {_type_words(over)})", ctor_tok)
            over = sum_
            if tag in seen:
                raise self.error(f"`case` has two arms for `{ctor_tok}`", ctor_tok)
            seen.add(tag)
            names = {b: f for b, f in zip(binders, fields) if b != "_"}
            arms.append((tag, self.term(body_node, env + (_Frame(1, names),))))
        if over is not None and default is None:
            missing = [c for t, c in enumerate(over.ctors) if t not in seen]
            if missing:
                raise self.error(f"`case` over `{over.name}` has no arm for "
                                 f"{', '.join(f'`{c}`' for c in missing)} and no `_` default",
                                 node.children[0] if isinstance(node.children[0], Token) else node)
        return T.Case(self.term(scrutinee, env), tuple(arms), default)

    def arm_fields(self, ctor_tok: Token, shape, binders: list) -> list:
        """What each binder of an arm names: a payload field's index, or
        None for the whole payload (one name for a payload that is not a
        tuple of several fields)."""
        if shape == S.UNIT:
            if binders:
                raise self.error(f"constructor `{ctor_tok}` has no payload but the arm binds "
                                 f"{len(binders)} name(s)", ctor_tok)
            return []
        if isinstance(shape, S.TupleShape) and len(shape.fields) != 1 and \
                len(binders) == len(shape.fields):
            return list(range(len(binders)))
        if len(binders) != 1:
            if isinstance(shape, S.TupleShape):
                want = f"{len(shape.fields)} names (one per field) or one (the whole payload)"
            else:
                want = "one name (its payload)"
            raise self.error(f"constructor `{ctor_tok}`'s arm binds {want}, not "
                             f"{len(binders)}", ctor_tok)
        return [None]


def _type_words(sum_) -> str:
    return "a `con` constructor" if sum_ is None else f"of type `{sum_.name}`"
