"""The committed LALR tables (ddir/lang/_lalr_tables.py) match the grammars,
and the parser loaded from them is the parser built from the grammar text."""

import pytest

from conftest import upstream_programs, ROOT
from ddir.lang import _lalr_tables, tables
from ddir.lang.parser import _parser


def test_the_tables_were_made_with_the_installed_lark():
    import lark
    assert _lalr_tables.LARK_VERSION == lark.__version__, (
        f"the tables were made with lark {_lalr_tables.LARK_VERSION}, this is {lark.__version__}: "
        "pyproject.toml pins the first; regenerate with `python -m ddir.lang.tables` if it moved")


@pytest.mark.parametrize("syntax", tables.SYNTAXES)
def test_committed_tables_match_the_grammar(syntax):
    stored = _lalr_tables.TABLES[syntax][0]
    assert stored == tables.fingerprint(tables.grammar_text(syntax)), (
        "the grammar changed: run `python -m ddir.lang.tables` and commit ddir/lang/_lalr_tables.py")


def test_the_loaded_parser_is_the_built_one():
    programs = upstream_programs() + sorted((ROOT / "programs").glob("*.ddp"))
    programs += sorted(p for p in (ROOT / "tests" / "programs").rglob("*") if p.suffix in (".ddp", ".ddir"))
    built = {syntax: tables.build(syntax) for syntax in tables.SYNTAXES}
    seen = set()
    for path in programs:
        syntax = "ddp" if path.suffix == ".ddp" else "ddir"
        seen.add(syntax)
        text = path.read_text()
        try:
            expected = built[syntax].parse(text, start="start")
        except Exception as e:  # a program that must not parse fails the same way
            with pytest.raises(type(e)):
                _parser(syntax).parse(text, start="start")
            continue
        assert _parser(syntax).parse(text, start="start") == expected, path
    assert seen == set(tables.SYNTAXES)


@pytest.mark.parametrize("damage", ["missing", "garbage"])
def test_a_damaged_tables_module_falls_back_to_the_grammar(monkeypatch, damage):
    import sys
    monkeypatch.delitem(sys.modules, "ddir.lang._lalr_tables")
    if damage == "missing":
        monkeypatch.setitem(sys.modules, "ddir.lang._lalr_tables", None)  # ImportError
    else:
        monkeypatch.setattr(_lalr_tables, "TABLES", {"ddp": ("x",)})
        monkeypatch.setitem(sys.modules, "ddir.lang._lalr_tables", _lalr_tables)
        monkeypatch.setattr(tables, "fingerprint", lambda text: "x")  # matches, then cannot load
    parser = tables.load("ddp")
    assert parser.parse('export "x" = input 0;\n', start="start")


def test_a_stale_table_falls_back_to_the_grammar(monkeypatch):
    stale = {s: ("0" * 64,) + entry[1:] for s, entry in _lalr_tables.TABLES.items()}
    monkeypatch.setattr(_lalr_tables, "TABLES", stale)
    built = []
    real_build = tables.build
    monkeypatch.setattr(tables, "build", lambda syntax: built.append(syntax) or real_build(syntax))
    parser = tables.load("ddp")
    assert built == ["ddp"]
    assert parser.parse("let x = input 0;\nexport \"x\" = x;\n", start="start")
