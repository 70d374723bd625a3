"""Render output records as text or as `--json` lines (SPEC Part B)."""

from __future__ import annotations

import json

from ..engine.time import format_time
from ..values import OUTSIDE, format_value, order_key, rows_to_json, string_mask, to_json


def error_record(message: str, file: str | None = None, line: int | None = None) -> dict:
    record = {"kind": "error", "message": message}
    if file is not None:
        record["file"] = file
        record["line"] = line
    return record


def changes_at(records: list) -> int:
    """Where a command's subscription ``change`` records go among its own
    records (a tick's): after the inspect events, before the rest (SPEC C2,
    as the registry orders them for the CLI). An ``ended`` record follows
    all of them (after the drop's own record)."""
    at = 0
    while at < len(records) and records[at].get("kind") == "inspect":
        at += 1
    return at


def render_text(record: dict) -> str:
    kind = record["kind"]
    if kind == "installed":
        return f'installed "{record["name"]}"'
    if kind == "reinstalled":
        return f'reinstalled "{record["name"]}"'
    if kind == "dropped":
        return f'dropped "{record["name"]}"'
    if kind == "tick":
        return f"tick -> epoch {record['epoch']}"
    if kind == "cancelled":  # `cancel` over serve (SPEC E3)
        return ("cancelling the command you started" if record["running"]
                else "nothing of yours is running to cancel")
    if kind == "error":
        where = f"{record['file']}:{record['line']}: " if "file" in record else ""
        return f"error: {where}{record['message']}"
    if kind == "inspect":
        d = record["diff"]
        return (f"  [{record['label']}] {format_value(record['key'])} ; {format_value(record['val'])}"
                f"  @{format_time(record['time'])}  {'+' if d > 0 else '-'}{abs(d)}")
    if kind == "peek":
        return _peek_text(record)
    if kind == "list":
        lines = [f"epoch: {record['epoch']}", f"traces ({len(record['traces'])}):"]
        lines += [f"  {t['name']} (importers: {t['importers']})" for t in record["traces"]]
        lines.append(f"programs ({len(record['programs'])}):")
        for p in record["programs"]:
            tag = f" [{p['origin']}]" if p["origin"] != "program" else ""
            if p.get("failed"):
                tag += f" [failed: {p['failed']}]"
            if p.get("readonly"):
                tag += f" [read-only: {p['readonly']}]"
            inputs = "[" + ", ".join(str(i) for i in p["inputs"]) + "]"
            imports = "[" + ", ".join(f'"{i}"' for i in p["imports"]) + "]"
            exports = "[" + ", ".join(f'"{e}"' for e in p["exports"]) + "]"
            lines.append(f"  {p['name']}{tag} (inputs: {inputs}, imports: {imports}, exports: {exports})")
        return "\n".join(lines)
    if kind == "subscribed":
        key = f" key={format_value(record['key'])}" if record.get("has_key") else ""
        n = len(record["rows"])
        lines = [f'subscribed "{record["trace"]}"{key} at epoch {record["epoch"]} ({n} rows)']
        lines += [f"  {{{record['trace']}}} {format_value(k)} ; {format_value(v)}  x{d}"
                  for k, v, d in record["rows"]]
        return "\n".join(lines)
    if kind == "change":
        t = format_time((record["epoch"],))
        return "\n".join(f"  {{{record['trace']}}} {format_value(k)} ; {format_value(v)}"
                         f"  @{t}  {'+' if d > 0 else '-'}{abs(d)}" for k, v, d in record["rows"])
    if kind == "unsubscribed":
        return f'unsubscribed "{record["trace"]}"'
    if kind == "ended":
        return f'subscription "{record["trace"]}" ended: {record["reason"]}'
    if kind == "loaded":
        return f'loaded {record["rows"]} rows into "{record["program"]}" input {record["input"]}'
    if kind == "checkpoint":
        return (f'checkpoint "{record["dir"]}" at epoch {record["epoch"]} '
                f'({record["programs"]} programs, {record["rows"]} rows)')
    if kind == "saved":
        return f'saved {record["rows"]} rows of "{record["trace"]}" to {record["file"]}'
    if kind == "help":
        width = max(len(c["usage"]) for c in record["commands"])
        return "\n".join(f"  {c['usage']:<{width}}  {c['summary']}" for c in record["commands"])
    raise ValueError(f"unknown record kind {kind!r}")


def _peek_text(record: dict) -> str:
    total = record["total"]
    key = f" key={format_value(record['key'])}" if record.get("has_key") else ""
    lines = [f'peek "{record["trace"]}"{key} ({total} rows):']
    for k, v, d in record["rows"]:
        lines.append(f"  {format_value(k)} ; {format_value(v)}  x{d}")
    shown_to = record["offset"] + len(record["rows"])
    # the prompt's implicit page only: elsewhere a limited peek ends with its
    # rows and the cursor line (SPEC C4)
    hinted = shown_to < total and record["rows"] and record.get("offset_hint")
    if hinted:
        more = total - shown_to
        # the command that shows the rest, key included, written compactly (a
        # printed value has blanks only after its commas, and in Strings)
        key_arg = f" {_compact(format_value(record['key']))}" if record.get("has_key") else ""
        lines.append(f"  ... {more} more row{'s' if more != 1 else ''} "
                     f"(peek {record['trace']}{key_arg} offset={shown_to})")
    if record.get("cursor") and not hinted:  # SPEC C4: the next page, as of this page's epoch
        # (the prompt's own page gives one way on, not two: issue 26, item 13)
        lines.append(f"  more: peek {record['trace']} cursor={record['cursor']}")
    return "\n".join(lines)


def _compact(text: str) -> str:
    """A printed value without the blanks after its commas (those inside
    its Strings kept)."""
    if '"' not in text:
        return text.replace(" ", "")
    return "".join(ch for ch, where in zip(text, string_mask(text))
                   if where != OUTSIDE or ch != " ")


def text_order(records: list) -> list:
    """Records as the text output prints them: the change records of one
    tick for one trace (several subscriptions to it) become one, its lines
    sorted by (key, val) (SPEC C2: changes sorted by trace, time, key, val);
    each subscription still reports its rows. JSON keeps one record per
    subscription."""
    out: list = []
    for r in records:
        last = out[-1] if out else None
        if (r.get("kind") == "change" and last is not None and last.get("kind") == "change"
                and last["trace"] == r["trace"] and last["epoch"] == r["epoch"]):
            rows = last["rows"] + r["rows"]
            rows.sort(key=lambda row: (order_key(row[0]), order_key(row[1])))
            out[-1] = dict(last, rows=rows)
        else:
            out.append(r)
    return out


PROMPT_PAGE = 50  # rows a `peek` without limit= shows at a prompt (local or `connect`)


def prompt_page(records: list) -> list:
    """The records of a prompt's implicit page: its peek says how to see
    the rest (SPEC B), which nothing else prints."""
    return [dict(r, offset_hint=True) if r["kind"] == "peek" else r for r in records]


def render_json(record: dict) -> str:
    kind = record["kind"]
    if kind == "peek":
        obj = {"kind": "peek", "trace": record["trace"],
               "key": to_json(record["key"]) if record.get("has_key") else None,
               "rows": rows_to_json(record["rows"]),
               "total": record["total"], "offset": record["offset"]}
        if record.get("cursor"):
            obj["cursor"] = record["cursor"]
    elif kind in ("subscribed", "change"):
        obj = {"kind": kind, "trace": record["trace"]}
        if kind == "subscribed" and record.get("has_key"):
            obj["key"] = to_json(record["key"])
        obj["epoch"] = record["epoch"]
        obj["rows"] = rows_to_json(record["rows"])
    elif kind == "ended":
        obj = {"kind": "ended", "trace": record["trace"], "reason": record["reason"]}
    elif kind == "inspect":
        obj = {"kind": "inspect", "label": record["label"], "key": to_json(record["key"]),
               "val": to_json(record["val"]), "time": list(record["time"]), "diff": record["diff"]}
    elif kind == "tick":
        obj = {"kind": "tick", "epoch": record["epoch"]}
    else:
        obj = record
    return json.dumps(obj, separators=(", ", ": "))
