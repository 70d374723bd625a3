"""Generated sources (SPEC A8): `random:...`, `iota:N`, `clock`.

A recipe is content-addressed by its canonical spelling (keys in a fixed
order, defaults written out), so every spelling of the same recipe names one
source. Each source is a tiny program (`export "<name>" = input 0;`) whose
input the server feeds itself.
"""

from __future__ import annotations

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
    params: tuple = ()   # random: (nodes, edges, arity, seed); iota: (n,)

    @property
    def name(self) -> str:
        if self.kind == "random":
            n, e, a, s = self.params
            return f"random:nodes={n},edges={e},arity={a},seed={s}"
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
        return random_rows(*self.params, shard, shards)


MAX_ROWS = 10_000_000


MAX_ARITY = 64


def _number(recipe: str, key: str, text: str) -> int:
    """A non-negative decimal that fits in 64 bits, as every Int must (SPEC A1)."""
    if not text.isascii() or not text.isdigit():
        raise RecipeError(f'generated source "{recipe}": {key} must be a non-negative integer, '
                          f"got `{text}`")
    if len(text.lstrip("0")) > 19 or int(text) > INT_MAX:
        raise RecipeError(f'generated source "{recipe}": {key} does not fit in a signed 64-bit integer')
    return int(text)


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
        if not eq or key not in ("nodes", "edges", "arity", "seed"):
            raise RecipeError(f'generated source "{name}": expected nodes=N,edges=E[,arity=A][,seed=S], '
                              f"got `{part}`")
        if key in params:
            raise RecipeError(f'generated source "{name}": `{key}` given twice')
        params[key] = _number(name, key, value)
    for required in ("nodes", "edges"):
        if required not in params:
            raise RecipeError(f'generated source "{name}": `{required}=` is required')
    if params["nodes"] == 0:
        raise RecipeError(f'generated source "{name}": nodes must be positive')
    if params["edges"] > MAX_ROWS:
        raise RecipeError(f'generated source "{name}": at most {MAX_ROWS} edges')
    if params.get("arity", 2) > MAX_ARITY:
        raise RecipeError(f'generated source "{name}": arity is at most {MAX_ARITY}')
    return Recipe("random", (params["nodes"], params["edges"], params.get("arity", 2),
                             params.get("seed", 0)))


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
    rows = []
    for e in range(shard, edges, shards):
        base = (e * 31 + seed * 0x9E3779B97F4A7C15) & MASK64
        key = tuple(splitmix64((base + c) & MASK64) % nodes for c in range(arity))
        rows.append((key, ()))
    return rows


def source_program(recipe: Recipe):
    text = f'export "{recipe.name}" = input 0;\n'
    return lower(parse_program(text, f"<{recipe.name}>", syntax="ddp"))
