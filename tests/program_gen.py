"""Random well-formed `.ddp` programs (all of SPEC Part A) and update streams
for them: the generator behind tests/test_random_programs.py (issue #9).

Seed-driven (``generate(seed)``), so a failure is reproduced by its seed; the
hypothesis strategies below just draw seeds (and shrink towards small ones).

What the generator guarantees, so that a discrepancy means a bug:

* **Well-typed enough.** Every collection carries a value type for its key
  and val (Int, Float, String, Tuple, List, the program's Variant type);
  Floats and Strings (SPEC D1) come in as fed values and through the
  builtins (`float`, `fadd`..., `fint`, `idiv`, `append`, `len`, `bytes`,
  `utf8`); their choices draw on a second random stream (``d1``), so a
  program without them is the one the same seed made before D1. Terms are generated
  for the types of the rows they see, so most rows evaluate. A few terms are
  deliberately wrong (an index out of range, arithmetic on a Tuple, a `case`
  without an arm, an overflow) so that runtime term errors are exercised too.
* **Programs lower.** `lift_iter` lets of a child scope are only read by the
  parent as `scope::name`; `enter_at` only inside scopes; `var` only in
  scopes; no cycles among lets (each reference points to something generated
  earlier; only vars close loops); `input` only at the root.
* **Loops converge.** A var body is either a *set* var (`... | distinct`)
  built only from collections that are positive (every multiplicity > 0)
  and monotone in the scope's vars (map/filter/flatmap/join/concat `+`/
  enter_at/distinct, never negate/`-`/min/count/collect of var-derived
  data), with its Ints bounded by a filter when arithmetic made new ones; or
  a *min* var (`seeds + (d | join(w, ($2 ; $1[0] + weight))) | min`, a
  min-plus relaxation with non-negative weights). Data from the outside
  (inputs may hold retractions of rows never inserted) reaches a var body
  only through a reducer, which makes it positive. Each collection tracks
  which iterating scopes it depends on and in which of them it is not
  monotone (`dep`, `nonmono`), so these rules hold through nested scopes.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from ddir.values import Float, List, Variant, format_value

# ------------------------------------------------------------------ types

INT = ("I",)
VAR = ("V",)  # the program's variant type (its constructors are per program)
FLT = ("F",)  # SPEC D1
STR = ("S",)


def TUP(*ts):
    return ("T", tuple(ts))


def LST(t):
    return ("L", t)


UNIT = TUP()


def is_tuple(t):
    return t[0] == "T"


BIG = 9223372036854775807


# ------------------------------------------------------------------ terms

@dataclass
class Ctx:
    rows: tuple              # types of $0, $1, ($2)
    binders: tuple = ()      # types of ^k, innermost last
    names: tuple = ()        # (name, type) bound by case arms


class TermGen:
    """Typed random terms. ``arith`` records whether a generated term can make
    new Ints (so a loop body needs a bounding filter)."""

    def __init__(self, rng: random.Random, ctors, err: float = 0.012,
                 d1: random.Random | None = None, d1_rate: float = 0.1):
        self.rng = rng
        self.ctors = ctors          # [(name, arity, tag)]
        self.err = err
        self.arith = False
        self._names = 0
        # Floats and Strings: decided by their own stream (see the module doc)
        self.d1 = d1 if d1 is not None else random.Random(rng.random())
        self.d1_rate = d1_rate

    # -- leaves

    def leaves(self, ctx: Ctx):
        out = []
        for i, t in enumerate(ctx.rows):
            out.append((f"${i}", t))
        for k, t in enumerate(reversed(ctx.binders)):
            out.append((f"^{k}", t))
        out.extend(ctx.names)
        result = []
        frontier = out
        for _ in range(3):
            nxt = []
            for src, t in frontier:
                result.append((src, t))
                if t[0] == "T":
                    for j, ft in enumerate(t[1]):
                        nxt.append((f"{src}[{j}]", ft))
            frontier = nxt
        result.extend(frontier)
        return result

    def fresh_name(self) -> str:
        self._names += 1
        return f"b{self._names}"

    def lit(self) -> str:
        r = self.rng.random()
        if r < 0.01:
            return str(BIG)
        return str(self.rng.choice([0, 0, 1, 1, 2, 3, 4, 5]))

    def any_type(self, depth=1):
        if self.d1.random() < self.d1_rate:
            return self.d1.choice([FLT, STR])
        r = self.rng.random()
        if r < 0.6 or depth <= 0:
            return INT
        if r < 0.75:
            return TUP(*[self.any_type(depth - 1) for _ in range(self.rng.randint(0, 2))])
        if r < 0.87:
            return LST(self.any_type(depth - 1))
        return VAR

    # -- the generator

    def term(self, ty, depth: int, ctx: Ctx) -> str:
        rng = self.rng
        if rng.random() < self.err:
            bad = self.wrong(ty, ctx)
            if bad is not None:
                return bad
        matching = [s for s, t in self.leaves(ctx) if t == ty]
        if depth <= 0 or rng.random() < 0.3:
            if matching and rng.random() < 0.8:
                return rng.choice(matching)
            return self.build(ty, 0, ctx)
        return self.compound(ty, depth, ctx)

    def wrong(self, ty, ctx: Ctx):
        rng = self.rng
        choices = []
        tuples = [s for s, t in self.leaves(ctx) if t[0] == "T"]
        ints = [s for s, t in self.leaves(ctx) if t == INT]
        if self.d1.random() < 0.3:  # Float and String builtins failing
            d1 = self.d1
            if ty == INT:
                return d1.choice(["fint(fdiv(float(1), float(0)))",
                                  "fint(fdiv(float(0), float(0)))",
                                  "fint(fmul(float(9223372036854775807), float(2)))",
                                  f"(float(1) + {self.lit()})", "idiv(float(1), 2)",
                                  "len(float(3))", "fint(3)"])
            if ty == FLT:
                return d1.choice(["fadd(1, float(2))", "fneg(utf8(list(97)))", "float(float(1))"])
            if ty == STR:
                return d1.choice(["utf8(list(255))", "utf8(list(237, 160, 128))", "utf8(list(-1))",
                                  "append(utf8(list(97)), list(1))", "bytes(1)"])
        if ty == INT:
            if tuples:
                choices.append(f"({rng.choice(tuples)} + 1)")
            if ints:
                choices.append(f"({rng.choice(ints)} * {BIG})")
                choices.append(f"({rng.choice(ints)} - {BIG} - 2)")
        if tuples:
            choices.append(f"{rng.choice(tuples)}[7]")
        choices.append(f"${len(ctx.rows)}")
        if ints:
            choices.append(f"case inject({rng.choice(ints)}, tuple()) {{ _ => {self.build(ty, 0, ctx)} }}"
                           if rng.random() < 0.3 else
                           f"case {rng.choice(ints)} {{ _ => {self.build(ty, 0, ctx)} }}")
        return rng.choice(choices) if choices else None

    def build(self, ty, depth: int, ctx: Ctx) -> str:
        """A term of type ``ty`` made with constructors (never fails to type)."""
        rng = self.rng
        if ty == INT:
            return self.lit()
        if ty == FLT:
            r = rng.random()
            if r < 0.25:  # a literal (the printed form, less the names inf and nan)
                return rng.choice(["0.0", "-0.0", "0.5", "1.0", "2.5", "-1.5", "1e+300", "1e-05"])
            if r < 0.6:
                return f"float({self.term(INT, depth - 1, ctx)})"
            if r < 0.85:
                return f"fdiv(float({self.lit()}), float({rng.choice([2, 3, 4, -2])}))"
            return rng.choice(["fdiv(float(1), float(0))", "fdiv(float(0), float(0))",
                               "fneg(float(0))", "fneg(fdiv(float(0), float(0)))",
                               "fmul(float(3037000500), float(3037000500))"])
        if ty == STR:
            if rng.random() < 0.4:  # a literal, with JSON escapes
                return format_value(rng.choice(STRINGS))
            codes = rng.choice([[], [97], [98], [97, 32, 98], [195, 169], [240, 159, 152, 128],
                                [34], [92], [10]])
            return f"utf8(list({', '.join(map(str, codes))}))"
        if ty[0] == "T":
            parts = [self.term(t, depth - 1, ctx) for t in ty[1]]
            return "tuple(" + ", ".join(parts) + ")"
        if ty[0] == "L":
            parts = [self.term(ty[1], depth - 1, ctx) for _ in range(rng.randint(0, 3))]
            return "list(" + ", ".join(parts) + ")"
        # a variant
        name, arity, tag = rng.choice(self.ctors)
        args = [self.term(INT, depth - 1, ctx) for _ in range(arity)]
        r = rng.random()
        if r < 0.6:
            return f"{name}({', '.join(args)})"
        kw = rng.choice(["inject", "variant"])
        if r < 0.95:
            return f"{kw}({tag}, tuple({', '.join(args)}))"
        return f"{kw}(7, {self.term(INT, depth - 1, ctx)})"  # a tag no constructor has

    def compound(self, ty, depth: int, ctx: Ctx) -> str:
        rng = self.rng
        d = depth - 1
        t = lambda ty2, c=ctx: self.term(ty2, d, c)  # noqa: E731
        options = ["if", "case"]
        if ty == INT:
            options += ["arith"] * 4 + ["neg", "cmp", "cmp", "and", "not", "or", "len",
                                        "istag", "hash", "fold", "proj", "case"]
        else:
            options += ["build", "build", "proj"]
        if ty[0] == "L" or ty == VAR or is_tuple(ty):
            options += ["fold"]
        op = rng.choice(options)
        d1 = self.d1
        if ty == FLT:
            op = d1.choice(["farith", "farith", "farith", "fneg", "build", "if", "case", "proj"])
        elif ty == STR:
            op = d1.choice(["append", "append", "utf8", "build", "if", "case", "proj"])
        elif ty == INT and d1.random() < self.d1_rate:
            op = d1.choice(["fint", "len_s", "idiv", "cmp_d1", "cmp_d1"])
        elif ty == LST(INT) and d1.random() < self.d1_rate * 2:
            op = d1.choice(["bytes", "append"])
        elif ty[0] == "L" and d1.random() < self.d1_rate:
            op = "append"
        if op in ("farith", "fneg", "fint", "idiv", "append"):
            self.arith = True  # new values, so a loop body gets a bounding filter
        if op == "farith":
            fn = d1.choice(["fadd", "fsub", "fmul", "fdiv"])
            return f"{fn}({t(FLT)}, {t(FLT)})"
        if op == "fneg":
            return f"fneg({t(FLT)})"
        if op == "append":
            return f"append({t(ty)}, {t(ty)})"
        if op == "utf8":
            return f"utf8(bytes({t(STR)}))"
        if op == "bytes":
            return f"bytes({t(STR)})"
        if op == "fint":
            return f"fint({t(FLT)})"
        if op == "len_s":
            return f"len({t(STR)})"
        if op == "idiv":
            return f"idiv({t(INT)}, {t(INT)})"
        if op == "cmp_d1":
            a_ty = d1.choice([FLT, STR])
            b_ty = a_ty if d1.random() < 0.9 else d1.choice([INT, FLT, STR])
            cmp = d1.choice(["==", "!=", "<", "<=", ">", ">="])
            return f"({t(a_ty)} {cmp} {t(b_ty)})"
        if op == "arith":
            self.arith = True
            n = rng.randint(1, 3)
            parts = [t(INT) for _ in range(n + 1)]
            out = parts[0]
            for p in parts[1:]:
                out += f" {rng.choice(['+', '-', '*', '+'])} {p}"
            return f"({out})"
        if op == "neg":
            self.arith = True
            return f"(-{t(INT)})"
        if op == "cmp":
            a_ty = self.any_type() if rng.random() < 0.4 else INT
            b_ty = a_ty if rng.random() < 0.9 else self.any_type()
            cmp = rng.choice(["==", "!=", "<", "<=", ">", ">="])
            return f"({t(a_ty)} {cmp} {t(b_ty)})"
        if op == "and":
            parts = [t(INT) for _ in range(rng.randint(2, 4))]
            return "(" + " && ".join(parts) + ")"
        if op == "not":
            return f"not({t(INT)})"
        if op == "or":
            return f"or({t(INT)}, {t(INT)})"
        if op == "if":
            return f"if({t(INT)}, {t(ty)}, {t(ty)})"
        if op == "len":
            arg_ty = rng.choice([TUP(INT, INT), LST(INT), TUP(), LST(VAR)])
            src = [s for s, tt in self.leaves(ctx) if tt[0] in "TL"]
            if src and rng.random() < 0.6:
                return f"len({rng.choice(src)})"
            return f"len({t(arg_ty)})"
        if op == "istag":
            return f"istag({rng.choice(self.ctors)[2]}, {t(VAR)})"
        if op == "hash":
            bound = rng.choice(["3", "5", "2", "0"]) if rng.random() < 0.9 else t(INT)
            if bound not in ("3", "5", "2"):
                self.arith = True  # bound 0 (or a computed one): up to 2^63 values
            keys = [t(INT) for _ in range(rng.randint(1, 3))]
            return f"hash({bound}, {', '.join(keys)})"
        if op == "proj":
            # a tuple with ty somewhere in it
            j = rng.randint(0, 2)
            fields = [self.any_type(0) for _ in range(3)]
            fields[j] = ty
            tup = TUP(*fields)
            src = [s for s, tt in self.leaves(ctx) if tt[0] == "T" and ty in tt[1]]
            if src and rng.random() < 0.7:
                s = rng.choice(src)
                tt = dict(self.leaves(ctx))[s]
                idx = [i for i, f in enumerate(tt[1]) if f == ty]
                return f"proj({s}, {rng.choice(idx)})"
            return f"proj({t(tup)}, {j})"
        if op == "build":
            return self.build(ty, d, ctx)
        if op == "fold":
            return self.fold(ty, d, ctx)
        if op == "case":
            return self.case(ty, d, ctx)
        raise AssertionError(op)

    def fold(self, ty, d, ctx: Ctx) -> str:
        rng = self.rng
        el = rng.choice([INT, INT, TUP(INT, INT), VAR])
        items = self.term(LST(el), d, ctx)
        init = self.term(ty, d, ctx)
        inner = replace(ctx, binders=ctx.binders + (ty, el))
        if ty == INT and el == INT and rng.random() < 0.5:
            self.arith = True
            step = rng.choice(["(^0 + ^1)", "(^1 - ^0)", "if(^0 < ^1, ^0, ^1)", "(^1 * 2)"])
        else:
            step = self.term(ty, d, inner)
        return f"fold({items}, {init}, {step})"

    def case(self, ty, d, ctx: Ctx) -> str:
        rng = self.rng
        scrut = self.term(VAR, d, ctx)
        arms = []
        ctors = rng.sample(self.ctors, rng.randint(1, len(self.ctors)))
        for name, arity, tag in ctors:
            binders = []
            names = list(ctx.names)
            for i in range(arity):
                if rng.random() < 0.15:
                    binders.append("_")
                else:
                    b = self.fresh_name()
                    binders.append(b)
                    names.append((b, INT))
            inner = replace(ctx, binders=ctx.binders + (TUP(*[INT] * arity),), names=tuple(names))
            arms.append(f"{name}({', '.join(binders)}) => {self.term(ty, d, inner)}")
        if rng.random() < 0.8:
            arms.append(f"_ => {self.term(ty, d, ctx)}")
        trailing = "," if rng.random() < 0.2 else ""
        return f"case {scrut} {{ {', '.join(arms)}{trailing} }}"


# ------------------------------------------------------------------ collections

@dataclass(frozen=True)
class Coll:
    kt: tuple
    vt: tuple
    pos: bool = False                 # every multiplicity > 0
    dep: frozenset = frozenset()      # iterating scopes whose vars it depends on
    nonmono: frozenset = frozenset()  # ... and in which of them it is not monotone
    lift: bool = False                # applies lift_iter (in a child: parent reads it)
    arith: bool = False               # unbounded Ints possible (matters in loops)


@dataclass
class Scope:
    id: int
    name: str
    parent: "Scope | None"
    iterating: bool
    stmts: list = field(default_factory=list)
    defs: dict = field(default_factory=dict)       # name -> Coll
    fields_of_children: dict = field(default_factory=dict)  # "c::f" -> Coll

    def chain(self):
        s = self
        while s is not None:
            yield s
            s = s.parent


@dataclass
class Generated:
    source: str
    inputs: dict          # n -> (key type, val type)
    ctors: list
    seed: int = 0


class ProgramGen:
    def __init__(self, seed: int, size: int = 2):
        self.rng = random.Random(seed)
        self.d1 = random.Random(seed ^ 0xD1D1)  # Floats and Strings (module doc)
        self.seed = seed
        self.size = size
        rng = self.rng
        names = rng.sample(["Leaf", "Pair", "Nil", "Tri", "Some", "Node", "One"], 3)
        arities = [1, 2, rng.choice([0, 1, 3])]
        tags = rng.sample(range(4), 3)
        self.ctors = [(n, a, t) for n, a, t in zip(names, arities, tags)]
        self.terms = TermGen(rng, self.ctors, d1=self.d1)
        self.counter = 0
        self.labels = ["p", "q", "r"]
        self.inputs: dict = {}
        self.scopes = 0
        self.unplaced = [f"con {n}({a}) = {t};" for n, a, t in self.ctors]

    # -- helpers

    def fresh(self, prefix="c") -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def term(self, ty, rows, depth=None) -> str:
        depth = self.rng.choice([0, 0, 1, 1, 2, 3]) if depth is None else depth
        return self.terms.term(ty, depth, Ctx(tuple(rows)))

    def input_type(self, n):
        if n not in self.inputs:
            rng = self.rng
            kt = TUP(*[INT] * rng.choice([1, 2, 2, 2, 3]))
            r = rng.random()
            vt = UNIT if r < 0.55 else TUP(INT) if r < 0.75 else TUP(INT, VAR) if r < 0.9 \
                else TUP(LST(INT))
            if rng.random() < 0.1:
                kt = TUP(INT, LST(INT))
            d1 = self.d1
            if d1.random() < 0.5:  # fed Floats and Strings
                kt = TUP(*[d1.choice([INT, FLT, STR]) if f == INT else f for f in kt[1]])
            if d1.random() < 0.5 and vt[0] == "T":
                vt = TUP(*[d1.choice([INT, FLT, STR]) if f == INT else f for f in vt[1]]
                         or [d1.choice([FLT, STR])])
            self.inputs[n] = (kt, vt)
        return self.inputs[n]

    def visible(self, scope: Scope, in_loop_body=False):
        """(reference text, Coll) readable in ``scope``."""
        out = []
        for s in scope.chain():
            for name, c in s.defs.items():
                if c.lift and s.parent is not None:
                    continue  # only the parent may read it, as s::name
                out.append((name, c))
        for name, c in scope.fields_of_children.items():
            out.append((name, c))
        return out

    def generated_source(self):
        """`import` of a generated source (SPEC A8): iota or a random graph,
        its recipe's keys in any order, defaults sometimes left out."""
        rng = self.rng
        if rng.random() < 0.4:
            return f'import "iota:{rng.randint(0, 6)}"', Coll(TUP(INT), UNIT, pos=True)
        arity = rng.choice([1, 2, 2, 3])
        parts = [f"nodes={rng.randint(1, 5)}", f"edges={rng.randint(0, 9)}"]
        if arity != 2 or rng.random() < 0.3:
            parts.append(f"arity={arity}")
        if rng.random() < 0.5:
            parts.append(f"seed={rng.randint(0, 3)}")
        rng.shuffle(parts)
        return f'import "random:{",".join(parts)}"', Coll(TUP(*[INT] * arity), UNIT, pos=True)

    # -- projections

    def projection(self, rows, want_k=None, want_v=None, bounded=False):
        """Source of a proj ``(k ; v)`` over rows of types ``rows`` and the
        resulting (key type, val type)."""
        rng = self.rng
        self.terms.arith = False

        def side(want, allow_splice=True):
            fields, types = [], []
            if want is not None:
                for ft in want[1]:
                    fields.append(self.term(ft, rows))
                    types.append(ft)
                return fields, types
            for _ in range(rng.choice([0, 1, 1, 2, 2, 3])):
                spl = [i for i, t in enumerate(rows) if t[0] == "T"]
                if allow_splice and spl and rng.random() < 0.25:
                    i = rng.choice(spl)
                    fields.append(f"${i}")
                    types.extend(rows[i][1])
                else:
                    ft = INT if bounded or rng.random() < 0.75 else self.terms.any_type()
                    fields.append(self.term(ft, rows))
                    types.append(ft)
            return fields, types

        kf, kts = side(want_k)
        if not kf and want_k is None and rng.random() < 0.7:
            kf, kts = [self.term(INT, rows)], [INT]
        vf, vts = side(want_v)
        if not vf and rng.random() < 0.5:
            src = f"({', '.join(kf)})"
        else:
            src = f"({', '.join(kf)} ; {', '.join(vf)})"
        return src, TUP(*kts), TUP(*vts), self.terms.arith

    # -- expressions

    def atom(self, scope: Scope, need=None):
        """A reference (or `input n` at the root): (text, Coll)."""
        rng = self.rng
        cands = self.visible(scope)
        if need is not None:
            cands = [(n, c) for n, c in cands if need(c)]
        if scope.parent is None and (not cands or rng.random() < 0.3) and need is None:
            if rng.random() < 0.12:
                return self.generated_source()
            n = rng.choice([0, 0, 1]) if rng.random() < 0.85 else 2
            kt, vt = self.input_type(n)
            return f"input {n}", Coll(kt, vt)
        if not cands:
            return None
        text, c = rng.choice(cands)
        return text, replace(c, lift=False)  # a reference never makes a lift_iter let

    def op(self, scope: Scope, text: str, c: Coll, allow_lift=True, monotone=False):
        """Apply one random operator. ``monotone``: only operators that keep a
        var body convergent."""
        rng = self.rng
        iterating = [s.id for s in scope.chain() if s.iterating]
        kinds = ["map", "map", "filter", "filter", "join", "join", "distinct", "arrange",
                 "inspect", "flatmap"]
        if not monotone:
            kinds += ["min", "count", "collect", "negate", "map", "join", "concat", "minus"]
            if allow_lift:
                kinds.append("lift_iter")
        if scope.parent is not None:
            kinds.append("enter_at")
        kind = rng.choice(kinds)
        self.terms.arith = False
        text, out = self._op(kind, scope, text, c, monotone, iterating)
        if self.terms.arith:
            out = replace(out, arith=True)
        return text, out

    def _op(self, kind, scope, text, c, monotone, iterating):
        rng = self.rng
        rows = [c.kt, c.vt]
        if kind == "map":
            proj, kt, vt, arith = self.projection(rows, bounded=monotone)
            kw = rng.choice(["key", "map", "key"])
            return f"{text} | {kw}{proj}", replace(c, kt=kt, vt=vt, arith=c.arith or arith)
        if kind == "filter":
            return f"{text} | filter({self.term(INT, rows)})", c
        if kind == "flatmap":
            lists = [s for s, t in self.terms.leaves(Ctx(tuple(rows))) if t[0] == "L"]
            if lists and rng.random() < 0.7:
                src = rng.choice(lists)
                el = dict(self.terms.leaves(Ctx(tuple(rows))))[src][1]
            else:
                el = INT
                src = self.term(LST(INT), rows, depth=1)
            return f"{text} | flatmap({src})", replace(c, vt=TUP(INT, el))
        if kind == "join":
            return self.join(scope, text, c, monotone)
        if kind in ("min", "distinct", "count", "collect"):
            vt = {"min": c.vt, "distinct": UNIT, "count": TUP(INT), "collect": LST(c.vt)}[kind]
            nonmono = c.nonmono
            if kind != "distinct" or not c.pos:
                nonmono = nonmono | c.dep
            return f"{text} | {kind}", replace(c, vt=vt, pos=True, nonmono=nonmono, arith=False)
        if kind == "arrange":
            return f"{text} | arrange", c
        if kind == "inspect":
            return f"{text} | inspect({rng.choice(self.labels)})", c
        if kind == "negate":
            return f"{text} | negate", replace(c, pos=False, nonmono=c.nonmono | c.dep)
        if kind == "lift_iter":
            vt = TUP(*c.vt[1], INT) if c.vt[0] == "T" else TUP(c.vt, INT)
            here = frozenset(iterating[:1])
            pos = c.pos and not (here & c.nonmono)
            return f"{text} | lift_iter", replace(c, vt=vt, lift=True, pos=pos,
                                                  nonmono=c.nonmono | (c.dep & here))
        if kind == "enter_at":
            r = rng.random()
            if r < 0.5:
                t = self.term(INT, rows, depth=1)
            elif r < 0.9:
                t = f"if({self.term(INT, rows, depth=1)}, {rng.choice([1, 2, 3])}, 0)"
            else:
                t = rng.choice(["(0 - 1)", "$0[0] - 2"]) if c.kt[1][:1] == (INT,) else "(0 - 1)"
            return f"{text} | enter_at({t})", c
        if kind in ("concat", "minus"):
            other = self.same_typed(scope, c)
            if other is None:
                return text, c
            o_text, o = other
            sign = "+" if kind == "concat" else "-"
            pos = c.pos and o.pos and sign == "+"
            nonmono = c.nonmono | o.nonmono | (o.dep if sign == "-" else frozenset())
            return f"({text}) {sign} {o_text}", replace(
                c, pos=pos, dep=c.dep | o.dep, nonmono=nonmono, lift=c.lift or o.lift,
                arith=c.arith or o.arith)
        raise AssertionError(kind)

    def remap(self, text: str, c: Coll, kt, vt, bounded: bool):
        """``text`` re-keyed to (kt ; vt): an atom-able pipe."""
        proj, kt2, vt2, arith = self.projection([c.kt, c.vt], kt, vt, bounded)
        kw = self.rng.choice(["key", "map"])
        return f"{text} | {kw}{proj}", replace(c, kt=kt2, vt=vt2, arith=c.arith or arith)

    def same_typed(self, scope, c: Coll, need=None):
        """An atom with c's types (re-keyed if needed), in parentheses."""
        got = self.atom(scope, need)
        if got is None:
            return None
        text, o = got
        if c.vt[0] != "T" and (o.vt, o.kt) != (c.vt, c.kt):
            return None  # a List val cannot be made by a projection
        if (o.kt, o.vt) != (c.kt, c.vt):
            text, o = self.remap(text, o, c.kt, c.vt, bounded=need is not None)
            return f"({text})", o
        return text, o

    def join(self, scope, text, c: Coll, monotone: bool):
        rng = self.rng
        need = (lambda o: o.pos and not (o.nonmono & self.loop_ids(scope))) if monotone else None
        got = self.atom(scope, need)
        if got is None:
            return text, c
        o_text, o = got
        if o.kt != c.kt:
            o_text, o = self.remap(o_text, o, c.kt,
                                   o.vt if rng.random() < 0.6 and o.vt[0] == "T" else None,
                                   bounded=monotone)
        elif rng.random() < 0.3:
            o_text = f"{o_text} | {rng.choice(['arrange', 'distinct'])}" if not monotone or o.pos \
                else o_text
            if o_text.endswith("distinct"):
                o = replace(o, vt=UNIT, pos=True, nonmono=o.nonmono if o.pos else o.nonmono | o.dep)
        proj, kt, vt, arith = self.projection([c.kt, c.vt, o.vt], bounded=monotone)
        res = Coll(kt, vt, pos=c.pos and o.pos, dep=c.dep | o.dep, nonmono=c.nonmono | o.nonmono,
                   lift=c.lift or o.lift, arith=c.arith or o.arith or arith)
        return f"{text} | join({o_text}, {proj})", res

    def loop_ids(self, scope):
        return frozenset(s.id for s in scope.chain() if s.iterating)

    def pipeline(self, scope: Scope, n_ops=None, allow_lift=True):
        rng = self.rng
        got = self.atom(scope)
        if got is None:
            return None
        text, c = got
        for _ in range(rng.choice([1, 1, 2, 2, 3]) if n_ops is None else n_ops):
            text, c = self.op(scope, text, c, allow_lift=allow_lift)
        return text, c

    # -- statements

    def let(self, scope: Scope):
        got = self.pipeline(scope, allow_lift=True)
        if got is None:
            return
        text, c = got
        name = self.fresh("x")
        scope.defs[name] = c
        scope.stmts.append(f"let {name} = {text};")

    def child(self, parent: Scope, depth: int):
        rng = self.rng
        self.scopes += 1
        s = Scope(self.scopes, self.fresh("s"), parent, iterating=rng.random() < 0.8)
        # vars are declared first (readable anywhere in the scope), bodies last
        var_specs = []
        if s.iterating:
            for _ in range(rng.choice([1, 1, 2, 2, 3])):
                kind = "min" if rng.random() < 0.3 else "set"
                kt = TUP(*[INT] * rng.choice([1, 1, 2]))
                vt = TUP(INT) if kind == "min" else UNIT
                name = self.fresh("v")
                # a var may depend on every enclosing loop; a set var is kept
                # monotone in all of them, a min var is monotone in none
                loops = self.loop_ids(s)
                c = Coll(kt, vt, pos=True, dep=loops,
                         nonmono=loops if kind == "min" else frozenset())
                s.defs[name] = c
                var_specs.append((name, kind, c))
        for _ in range(rng.randint(0, 2 + self.size)):
            if depth < 3 and rng.random() < 0.25:
                self.child(s, depth + 1)
            else:
                self.let(s)
        if self.unplaced and rng.random() < 0.2:  # `con` is file-wide, also inside a scope
            s.stmts.append(self.unplaced.pop())
        for name, kind, c in var_specs:
            body = self.set_body(s, c) if kind == "set" else self.min_body(s, name, c)
            s.stmts.append(f"var {name} = {body};")
            # the real dependencies of the var, now that its body is known
        rng.shuffle(s.stmts)
        text = "\n".join("    " + line for st in s.stmts for line in st.split("\n"))
        parent.stmts.append(f"{s.name}: {{\n{text}\n}}")
        for name, c in s.defs.items():
            parent.fields_of_children[f"{s.name}::{name}"] = replace(
                c, dep=c.dep - {s.id}, nonmono=c.nonmono - {s.id})

    def loop_source(self, s: Scope, kt, vt):
        """A positive, monotone atom re-keyed to (kt ; vt), for a var body.
        Outside data that is not positive gets a `distinct` first."""
        rng = self.rng
        loops = self.loop_ids(s)
        cands = [(n, c) for n, c in self.visible(s) if not (c.nonmono & loops)]
        if not cands:
            return None
        text, c = rng.choice(cands)
        if not c.pos:
            if c.dep & loops:
                return None
            red = rng.choice(["distinct", "distinct", "count", "min"])
            vt_red = {"distinct": UNIT, "count": TUP(INT), "min": c.vt}[red]
            text, c = f"{text} | {red}", replace(c, pos=True, vt=vt_red)
        for _ in range(rng.choice([0, 0, 1, 2])):
            text, c = self.op(s, text, c, monotone=True)
        text, c = self.remap(text, c, kt, vt, bounded=True)
        return f"({text})", c

    def bound_filter(self, kt, vt) -> str:
        parts = []
        for side, t in (("$0", kt), ("$1", vt)):
            for i, ft in enumerate(t[1]):
                if ft == INT:
                    parts.append(f"{side}[{i}] < {self.rng.choice([5, 6, 8])}")
                    parts.append(f"{side}[{i}] > {self.rng.choice([-3, -1, -6])}")
        return " && ".join(parts) if parts else "1"

    def set_body(self, s: Scope, c: Coll) -> str:
        rng = self.rng
        parts = []
        arith = False
        for _ in range(rng.choice([1, 2, 2, 3])):
            got = self.loop_source(s, c.kt, c.vt)
            if got is None:
                continue
            text, pc = got
            arith = arith or pc.arith
            parts.append(text)
        if not parts:
            parts.append("(" + self.atom_for_empty(s, c) + ")")
        body = " + ".join(parts)
        if arith or rng.random() < 0.2:
            body = f"{body} | filter({self.bound_filter(c.kt, c.vt)})"
        return f"{body} | distinct"

    def atom_for_empty(self, s, c):
        # the var itself, re-keyed: an empty var stays empty, a legal body
        name = [n for n, cc in s.defs.items() if cc is c][0]
        return f"{name} | key({', '.join(f'$0[{i}]' for i in range(len(c.kt[1])))} ;)"

    def min_body(self, s: Scope, name: str, c: Coll) -> str:
        rng = self.rng
        seeds = self.loop_source(s, c.kt, c.vt)
        seeds = seeds[0] if seeds else f"({name} | key($0 ; $1))"
        k = len(c.kt[1])
        # weights: a positive monotone source re-keyed to (src ; dst..., w)
        wt = TUP(*([INT] * k + ([INT] if rng.random() < 0.6 else [])))
        w = self.loop_source(s, c.kt, wt)
        if w is None:
            w_text = f"({name} | key($0 ; {', '.join(f'$0[{i}]' for i in range(k))}))"
            wt = TUP(*[INT] * k)
        else:
            w_text = w[0]
        if len(wt[1]) == k:
            weight = rng.choice(["1", "0", "2"])
            key = "$2" if rng.random() < 0.5 else ", ".join(f"$2[{i}]" for i in range(k))
        else:
            key = ", ".join(f"$2[{i}]" for i in range(k))
            weight = rng.choice([f"$2[{k}] * $2[{k}]", f"hash(3, $2[{k}])", "1"])
        step = f"({name} | join({w_text}, ({key} ; $1[0] + {weight})))"
        body = f"{seeds} + {step}"
        if rng.random() < 0.5:
            body += f" | filter($1[0] < {rng.choice([6, 9, 12])})"
        return f"{body} | min"

    def program(self) -> Generated:
        rng = self.rng
        root = Scope(0, "<root>", None, iterating=False)
        for _ in range(rng.randint(1, 2 + self.size)):
            self.let(root)
        for _ in range(rng.choice([0, 1, 1, 2])):
            self.child(root, 1)
        for _ in range(rng.randint(0, 2)):
            self.let(root)
        # prefer the scopes' results and the last lets
        fields = [(n, c) for n, c in root.fields_of_children.items()]
        rng.shuffle(fields)
        lets = list(reversed(root.defs.items()))
        chosen = (fields + lets)[:rng.randint(1, 3)]
        if not chosen:
            chosen = [("input 0", Coll(*self.input_type(0)))]
        for i, (name, c) in enumerate(chosen):
            text = name
            if rng.random() < 0.3:
                text, c = self.op(root, text, c)
            root.stmts.append(f'export "e{i}" = {text};')
        stmts = root.stmts + self.unplaced
        rng.shuffle(stmts)
        if rng.random() < 0.3:
            stmts.insert(0, f"-- random program, seed {self.seed}")
        source = "\n".join(stmts) + "\n"
        return Generated(source, dict(self.inputs), self.ctors, self.seed)


def generate(seed: int, size: int = 2) -> Generated:
    return ProgramGen(seed, size).program()


# ------------------------------------------------------------------ values and streams

FLOATS = [0.0, -0.0, 0.5, 1.0, 2.5, -1.5, 3.0, float("inf"), float("-inf"), float("nan"),
          -float("nan"), 1e300, 5e-324]
STRINGS = ["", "a", "b", "a b", "\u00e9", "New York", "\U0001F600", '"', "\\", "\n", "1", "(1)"]


def random_value(rng: random.Random, ty, ctors, lo=0, hi=4):
    if ty == INT:
        return rng.randint(lo, hi) if rng.random() < 0.97 else rng.choice([-1, -2, 7])
    if ty == FLT:
        return Float(rng.choice(FLOATS))
    if ty == STR:
        return rng.choice(STRINGS)
    if ty[0] == "T":
        return tuple(random_value(rng, t, ctors, lo, hi) for t in ty[1])
    if ty[0] == "L":
        return List(random_value(rng, ty[1], ctors, lo, hi) for _ in range(rng.randint(0, 3)))
    name, arity, tag = rng.choice(ctors)
    if rng.random() < 0.03:
        return Variant(7, rng.randint(0, 3))
    return Variant(tag, tuple(rng.randint(lo, hi) for _ in range(arity)))


HUGE_DIFFS = [3037000500, 2 ** 62, -(2 ** 62), 2 ** 63 - 1]


def random_stream(seed: int, inputs: dict, ctors, epochs: int = 5, huge: float = 0.0):
    """[(epoch, [(time, input, key, val, diff)])]: inserts with multiplicities
    up to 3, future times, retractions of present rows and of rows never
    inserted (negative accumulations); with probability ``huge`` a diff near
    the 64-bit limit (joins and accumulations then overflow, SPEC A1)."""
    rng = random.Random(seed ^ 0x5EED)
    out = []
    staged = []
    ns = sorted(inputs)
    for e in range(epochs):
        batch = []
        for _ in range(rng.randint(0, 8) if ns else 0):
            n = rng.choice(ns)
            kt, vt = inputs[n]
            t = e + rng.choice([0, 0, 0, 0, 1, 2, 4])
            r = rng.random()
            mine = [u for u in staged if u[1] == n]
            if mine and r < 0.3:
                _, _, key, val, _ = rng.choice(mine)
                d = -rng.choice([1, 1, 2])
            else:
                key = random_value(rng, kt, ctors)
                val = random_value(rng, vt, ctors)
                d = rng.choice([1, 1, 1, 2, 3]) if r < 0.93 else -1
                if rng.random() < huge:
                    d = rng.choice(HUGE_DIFFS)
            u = (t, n, key, val, d)
            staged.append(u)
            batch.append(u)
        out.append((e, batch))
    return out


# ------------------------------------------------------------------ hypothesis

try:
    from hypothesis import strategies as st

    program_seeds = st.integers(0, 2 ** 32 - 1)

    @st.composite
    def programs(draw, size=st.integers(1, 3)):
        """A (Generated program, stream) pair."""
        seed = draw(program_seeds)
        g = generate(seed, draw(size))
        huge = draw(st.sampled_from([0.0, 0.0, 0.0, 0.0, 0.1]))
        return g, random_stream(seed, g.inputs, g.ctors, epochs=draw(st.integers(2, 6)), huge=huge)
except ImportError:  # pragma: no cover
    pass


# ------------------------------------------------------------------ shrinking

def _block_end(lines, i):
    """Index of the line closing the block opened at line ``i`` (or ``i``)."""
    if not lines[i].rstrip().endswith("{"):
        return i
    depth = 0
    for j in range(i, len(lines)):
        depth += lines[j].count("{") - lines[j].count("}")
        if depth == 0:
            return j
    return len(lines) - 1


def _pipe_cuts(line):
    """Variants of ``line`` with one top-level ``| op`` segment removed."""
    out = []
    depth = 0
    marks = []
    for i, ch in enumerate(line):
        if ch in "({[":
            depth += 1
        elif ch in ")}]":
            depth -= 1
        elif ch == "|" and depth >= 0:
            marks.append((i, depth))
    for n, (i, d) in enumerate(marks):
        # the segment runs to the next '|' at the same depth, or to the end of that depth
        j, depth = i + 1, d
        while j < len(line):
            ch = line[j]
            if ch in "({[":
                depth += 1
            elif ch in ")}]":
                if depth == d:
                    break
                depth -= 1
            elif ch in "|;," and depth == d:
                break
            j += 1
        out.append(line[:i].rstrip() + " " + line[j:].lstrip() if line[j:j + 1] == "|"
                   else line[:i].rstrip() + line[j:])
    return out


def shrink(source: str, stream, fails, max_steps: int = 2000):
    """Greedy minimisation of a failing (program, stream) pair: drop updates,
    epochs, statements (a scope with its block) and pipeline operators while
    ``fails(source, stream)`` keeps returning the same signature (a truthy
    value naming the kind of failure)."""
    sig = fails(source, stream)
    assert sig, "shrink needs a failing case"
    steps = 0

    def still(src, st):
        nonlocal steps
        steps += 1
        try:
            return fails(src, st) == sig
        except Exception:
            return False

    progress = True
    while progress and steps < max_steps:
        progress = False
        # the stream: trailing epochs, then single updates
        while len(stream) > 1 and still(source, stream[:-1]):
            stream, progress = stream[:-1], True
        for e in range(len(stream)):
            i = 0
            while i < len(stream[e][1]):
                cand = [(ep, b if ep != stream[e][0] else b[:i] + b[i + 1:]) for ep, b in stream]
                if still(source, cand):
                    stream, progress = cand, True
                else:
                    i += 1
        # statements
        lines = source.splitlines()
        i = 0
        while i < len(lines):
            if lines[i].strip() in ("}", "") or lines[i].lstrip().startswith("con "):
                i += 1
                continue
            end = _block_end(lines, i)
            cand = lines[:i] + lines[end + 1:]
            if still("\n".join(cand) + "\n", stream):
                lines, progress = cand, True
            else:
                i += 1
        # pairs of statements (a scope read only by one let, say)
        units = [i for i, ln in enumerate(lines)
                 if ln.strip() not in ("}", "") and not ln.lstrip().startswith("con ")]
        done = False
        for a in units:
            for b in units:
                if done or b <= a or b <= _block_end(lines, a):
                    continue
                ea, eb = _block_end(lines, a), _block_end(lines, b)
                cand = lines[:a] + lines[ea + 1:b] + lines[eb + 1:]
                if still("\n".join(cand) + "\n", stream):
                    lines, progress, done = cand, True, True
        source = "\n".join(lines) + "\n"
        # pipeline operators
        lines = source.splitlines()
        for i in range(len(lines)):
            changed = True
            while changed:
                changed = False
                for cut in _pipe_cuts(lines[i]):
                    cand = lines[:i] + [cut] + lines[i + 1:]
                    if still("\n".join(cand) + "\n", stream):
                        lines, changed, progress = cand, True, True
                        break
        source = "\n".join(lines) + "\n"
        # unused constructors
        lines = source.splitlines()
        for i in reversed(range(len(lines))):
            if lines[i].lstrip().startswith("con "):
                cand = lines[:i] + lines[i + 1:]
                if still("\n".join(cand) + "\n", stream):
                    lines, progress = cand, True
        source = "\n".join(lines) + "\n"
    return source, stream
