"""Generated sources (SPEC A8, D3): `random:...`, `iota:N`, `clock`.

A recipe is content-addressed by its canonical spelling (keys in a fixed
order, defaults written out), so every spelling of the same recipe names one
source. Each source is a tiny program (`export "<name>" = input 0;`) whose
input the server feeds itself.

The random sequence (the reference's, `interactive/src/server.rs` in
TimelyDataflow/differential-dataflow: its `Recipe::Random`, `Server::tick`
and `install_generated`). A recipe `random:nodes=N,edges=E,arity=A,seed=S,
churn=C` denotes an endless stream of rows numbered 0, 1, 2, ...; row `e` is
``(key ; ())`` whose field `c` (0 <= c < A) is
``splitmix64((e*31 + S*0x9e3779b97f4a7c15 + c) mod 2^64) mod N``.
The source holds a window of E consecutive rows of that stream:

* installed, it holds rows `0 .. E-1` at time 0 (in the closed past at once
  when installed after epoch 0, as every generated source);
* the n-th tick after its install (n = 1, 2, ...; the tick closing epoch
  `since + n - 1`, `since` the epoch it was installed at) retracts rows
  `(n-1)*C .. (n-1)*C + C-1` and adds rows `(n-1)*C + E .. (n-1)*C + E + C-1`,
  at the epoch that tick closes. So once it has closed, the source holds rows
  `n*C .. n*C + E-1`: one installed at epoch 0 holds rows
  `e*C .. e*C + E-1` at epoch e >= 1 (what `peek` shows then). With C > E
  a tick replaces the whole window; C = 0 (the default) never changes it.

Every worker produces the rows whose numbers are its own (``e mod workers
== index``), retractions and additions alike, and sends each to the owner of
its key, so the source is the same for every ``-w N``. What a tick changes
depends only on the recipe, its install epoch and the epoch closed, so a
restored server (its checkpoint keeps each source's recipe and install
epoch) goes on where the checkpointed one was; a restore's replay that closes
several epochs in one step moves the window by all of them at once.

The canonical name writes `churn=C` only when C > 0 (SPEC A8's names are
unchanged: `random:nodes=8,edges=12,arity=2,seed=0`; the reference always
writes `,churn=0`). The reference's call form of a binding at install,
``edges=random(seed=S,arity=A,range=N,count=E,churn=C)``
(:func:`binding_source`), names the same source as
``random:nodes=N,edges=E,arity=A,seed=S,churn=C``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..ir.lower import lower
from ..lang.parser import parse_program
from ..terms.runtime import MASK64, splitmix64
from ..values import INT_MAX


class RecipeError(ValueError):
    pass


@dataclass(frozen=True)
class Recipe:
    kind: str            # "random" | "iota" | "clock"
    params: tuple = ()   # random: (nodes, edges, arity, seed, churn); iota: (n,)

    @property
    def name(self) -> str:
        if self.kind == "random":
            n, e, a, s, c = self.params
            churn = f",churn={c}" if c else ""
            return f"random:nodes={n},edges={e},arity={a},seed={s}{churn}"
        if self.kind == "iota":
            return f"iota:{self.params[0]}"
        return "clock"

    @property
    def origin(self) -> str:
        return "clock" if self.kind == "clock" else "generated"

    def rows(self, epoch: int, shard: int = 0, shards: int = 1) -> list:
        """The source's contents (for clock: at ``epoch``) as (key, val);
        with ``shards`` workers, only row numbers ``shard, shard+shards...``,
        so each worker produces its own share."""
        if self.kind == "iota":
            return [((i,), ()) for i in range(shard, self.params[0], shards)]
        if self.kind == "clock":
            return [((epoch,), ())] if shard == 0 else []
        return random_rows(*self.params[:4], shard, shards)

    @property
    def churn(self) -> int:
        """Rows replaced at every tick (random only; 0: never changes)."""
        return self.params[4] if self.kind == "random" else 0

    def changes(self, before: int, after: int, shard: int = 0, shards: int = 1) -> list:
        """``(key, val, diff)``: what moves the window from where it is
        ``before`` ticks after the install to where it is ``after`` ticks
        after it (see the module doc), net; only row numbers ``shard,
        shard+shards, ...``."""
        nodes, edges, arity, seed, churn = self.params
        lo0, lo1 = before * churn, after * churn
        hi0, hi1 = lo0 + edges, lo1 + edges
        out = [(key, val, -1) for key, val in
               _window(nodes, arity, seed, lo0, min(hi0, lo1), shard, shards)]
        out += [(key, val, 1) for key, val in
                _window(nodes, arity, seed, max(hi0, lo1), hi1, shard, shards)]
        return out


MAX_ROWS = 10_000_000


MAX_ARITY = 64


def _number(recipe: str, key: str, text: str, label: str | None = None) -> int:
    """A non-negative decimal that fits in 64 bits, as every Int must (SPEC A1).
    ``label`` heads the message (default: the recipe's)."""
    label = label or f'generated source "{recipe}"'
    if not text.isascii() or not text.isdigit():
        raise RecipeError(f"{label}: {key} must be a non-negative integer, got `{text}`")
    if len(text.lstrip("0")) > 19 or int(text) > INT_MAX:
        raise RecipeError(f"{label}: {key} does not fit in a signed 64-bit integer")
    return int(text)


RANDOM_KEYS = ("nodes", "edges", "arity", "seed", "churn")


def _random_recipe(params: dict, label: str, shown: dict | None = None) -> Recipe:
    """The random :class:`Recipe` of ``params`` (key -> int, ``RANDOM_KEYS``;
    ``nodes`` and ``edges`` present), its ranges checked; a message names a
    key as ``shown`` spells it (the call form's ``range``/``count``)."""
    shown = shown or {}
    say = lambda key: shown.get(key, key)  # noqa: E731
    if params["nodes"] == 0:
        raise RecipeError(f"{label}: {say('nodes')} must be positive")
    if params["edges"] > MAX_ROWS:
        raise RecipeError(f"{label}: {say('edges')} is at most {MAX_ROWS}" if "edges" in shown
                          else f"{label}: at most {MAX_ROWS} edges")
    if params.get("arity", 2) > MAX_ARITY:
        raise RecipeError(f"{label}: {say('arity')} is at most {MAX_ARITY}")
    return Recipe("random", (params["nodes"], params["edges"], params.get("arity", 2),
                             params.get("seed", 0), params.get("churn", 0)))


def parse_recipe(name: str):
    """A :class:`Recipe` when ``name`` is a generated-source spelling, else None."""
    if name == "clock":
        return Recipe("clock")
    kind, colon, rest = name.partition(":")
    if not colon or kind not in ("random", "iota"):
        return None
    if kind == "iota":
        n = _number(name, "N", rest)
        if n > MAX_ROWS:
            raise RecipeError(f'generated source "{name}": at most {MAX_ROWS} rows')
        return Recipe("iota", (n,))
    params = {}
    for part in rest.split(","):
        key, eq, value = part.partition("=")
        if not eq or key not in RANDOM_KEYS:
            raise RecipeError(f'generated source "{name}": expected '
                              f"nodes=N,edges=E[,arity=A][,seed=S][,churn=C], got `{part}`")
        if key in params:
            raise RecipeError(f'generated source "{name}": `{key}` given twice')
        params[key] = _number(name, key, value)
    for required in ("nodes", "edges"):
        if required not in params:
            raise RecipeError(f'generated source "{name}": `{required}=` is required')
    return _random_recipe(params, f'generated source "{name}"')


# the call form's parameters (the reference's `random(...)` binding) -> the recipe's keys
CALL_KEYS = {"seed": "seed", "arity": "arity", "range": "nodes", "count": "edges", "churn": "churn"}
_CALL = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*", re.S)


def binding_source(binding: str, label: str | None = None) -> str:
    """The trace a binding at install names: ``random(seed=S,arity=A,
    range=N,count=E,churn=C)`` (any order, blanks allowed around each part;
    ``range`` and ``count`` required, the others default to 2, 0, 0) is the
    canonical name of that random recipe; any other text is a trace name as
    it is. A malformed call raises :class:`RecipeError` naming the
    parameter; ``label`` heads its message (default: the call)."""
    match = _CALL.fullmatch(binding)
    if match is None:
        return binding
    label = label or f"`{binding.strip()}`"
    func, body = match.groups()
    if func != "random":
        raise RecipeError(f"{label}: unknown source `{func}(...)`; a binding names a trace or "
                          "calls random(seed=..,arity=..,range=..,count=..,churn=..)")
    params: dict = {}
    for part in body.split(",") if body.strip() else []:
        key, eq, value = (s.strip() for s in part.partition("="))
        if not eq:
            raise RecipeError(f"{label}: expected `parameter=value`, got `{part.strip()}`")
        if key not in CALL_KEYS:
            raise RecipeError(f"{label}: unknown parameter `{key}` (random takes "
                              + ", ".join(CALL_KEYS) + ")")
        if CALL_KEYS[key] in params:
            raise RecipeError(f"{label}: `{key}` given twice")
        params[CALL_KEYS[key]] = _number("", key, value, label)
    for required in ("range", "count"):
        if CALL_KEYS[required] not in params:
            raise RecipeError(f"{label}: `{required}=` is required")
    return _random_recipe(params, label, {v: k for k, v in CALL_KEYS.items()}).name


def bind_imports(program, bindings: dict):
    """``program`` with each ``import "<local>"`` of ``bindings`` (local
    import name -> trace name, :func:`binding_source`) reading that trace
    instead: its import nodes, its imports and its declared import shapes.
    A binding of a name the program does not import raises
    :class:`RecipeError`."""
    from dataclasses import replace
    from ..ir.nodes import ImportNode
    for local in bindings:
        if local not in program.imports:
            imported = ", ".join(f'"{t}"' for t in program.imports) or "nothing"
            raise RecipeError(f'binding `{local}=`: the program has no `import "{local}"` '
                              f"(it imports {imported})")
    if not bindings:
        return program
    nodes = tuple(replace(n, trace=bindings[n.trace])
                  if isinstance(n, ImportNode) and n.trace in bindings else n
                  for n in program.nodes)
    imports = tuple(sorted({bindings.get(t, t) for t in program.imports}))
    shapes = tuple(sorted(((k, bindings.get(n, n) if k == "import" else n, s)
                           for k, n, s in program.shapes), key=lambda x: (x[0], str(x[1]))))
    return replace(program, nodes=nodes, imports=imports, shapes=shapes)


def import_at(program, trace: str) -> str:
    """``file:line:col`` of the import of ``trace`` in the lowered
    ``program`` (its string literal), for an install error about it."""
    from ..ir.nodes import ImportNode
    for node in program.nodes:
        if isinstance(node, ImportNode) and node.trace == trace:
            line, col = node.loc
            return f"{program.file}:{line}:{col}"
    return program.file


def check_recipes(program, source: str | None = None, exports=()) -> None:
    """A located :class:`ProgramError` at the first import of a malformed
    generated-source spelling (`iota:-1`, `random:nodes=0,edges=5`), or the
    first export spelled like a generated source (every install would
    refuse it; ``exports``: ``(name, loc)`` of the export statements): what
    ``ddir check`` can tell without a server (whether another name is a
    trace depends on the server)."""
    from ..ir.nodes import ImportNode
    from ..lang.errors import ProgramError
    for node in program.nodes:
        if isinstance(node, ImportNode):
            try:
                parse_recipe(node.trace)
            except RecipeError as e:
                line, col = node.loc
                raise ProgramError(str(e), program.file, line, col, source) from None
    for name, (line, col) in exports:
        if shadows_a_source(name):
            raise ProgramError(shadow_message(name), program.file, line, col, source)


def shadows_a_source(name: str) -> bool:
    """Whether an export ``name`` is spelled as generated sources are
    (`clock`, `iota:...`, `random:...`, well formed or not)."""
    try:
        return parse_recipe(name) is not None
    except RecipeError:
        return True


def shadow_message(name: str) -> str:
    return (f'export "{name}" would shadow a generated source (`clock` and names starting '
            "`iota:` or `random:` are theirs)")


def random_rows(nodes: int, edges: int, arity: int, seed: int, shard: int = 0,
                shards: int = 1) -> list:
    """Rows ``0 .. edges-1`` of the random stream (those numbered ``shard,
    shard+shards, ...``) as ``(key, ())``."""
    return _window(nodes, arity, seed, 0, edges, shard, shards)


def _window(nodes: int, arity: int, seed: int, lo: int, hi: int, shard: int, shards: int) -> list:
    """Rows ``lo .. hi-1`` of the random stream numbered ``shard`` mod ``shards``."""
    first = lo + (shard - lo) % shards
    spread = (seed * 0x9E3779B97F4A7C15) & MASK64
    rows = []
    for e in range(first, hi, shards):
        base = (e * 31 + spread) & MASK64
        rows.append((tuple(splitmix64((base + c) & MASK64) % nodes for c in range(arity)), ()))
    return rows


def source_program(recipe: Recipe):
    text = f'export "{recipe.name}" = input 0;\n'
    return lower(parse_program(text, f"<{recipe.name}>", syntax="ddp"))
