"""Every counter the code counts is declared in recorderd/counters.py, and every one declared is counted.

The source of capture/, storage/, recorderd/ and console/ is read (ast, nothing imported): every
``counters[...]`` (a pipeline's ``self.counters``, a ``c = pipeline.counters``, the ``counters`` of a
status reply) and every ``counters.get(...)``/``setdefault(...)``, with the name it is given resolved
to the strings it can be: a literal, a module's constant (``NOT_UDP``, imported or not), either side
of ``a if x else b``, a loop over a tuple of names, a parameter (the literal each call in the module
passes: ``self._ignore(cid, ts, "calls_not_designated")``), or what a decoder returns
(``udp = decode_udp(...)``: the constants its ``return``s name, through the helpers it returns).
A name the test cannot resolve fails it: say where it comes from, or name the counter plainly.
"""
from __future__ import annotations

import ast
import json
import re
from collections import Counter as Tally
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import FIXTURES, Site

from recorderd import counters as table

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("capture", "storage", "recorderd", "console")
TABLE_MODULE = "recorderd/counters.py"

# What a decoder returns that the code handles before it counts the rest (capture/pipeline.py
# branches on these: TCP is followed as a stream, CUT keeps what was captured). Not counter names.
NOT_COUNTED = {"tcp", "cut"}
# Parameters filled from the table by a caller in another package (storage does not import
# recorderd): checked in test_what_storage_is_given_comes_from_the_table.
PASSED_FROM_TABLE = {("storage/reports.py", "period_report", "sections")}


class Unresolved(Exception):
    pass


TABLE_SENTINEL = "<the table>"  # a name read from recorderd/counters.py itself: declared by construction


@dataclass
class Module:
    path: str
    tree: ast.Module
    consts: dict[str, ast.expr] = field(default_factory=dict)  # module-level NAME = expr
    imports: dict[str, tuple[str, str]] = field(default_factory=dict)  # local name -> (module path, name)
    functions: dict[str, list[ast.FunctionDef]] = field(default_factory=lambda: defaultdict(list))
    parents: dict[ast.AST, ast.AST] = field(default_factory=dict)


def _module_path(dotted: str) -> str | None:
    p = ROOT / (dotted.replace(".", "/") + ".py")
    return str(p.relative_to(ROOT)) if p.is_file() else None


@lru_cache(maxsize=1)
def load() -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            rel = str(f.relative_to(ROOT))
            tree = ast.parse(f.read_text(encoding="utf-8"), rel)
            m = Module(rel, tree)
            package = rel.rsplit("/", 1)[0].replace("/", ".")
            for node in tree.body:
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    m.consts[node.targets[0].id] = node.value
                elif isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:
                        parts = package.split(".")
                        parts = parts[: len(parts) - node.level + 1]
                        base = ".".join([*parts, *([node.module] if node.module else [])])
                    for alias in node.names:
                        src = _module_path(base)
                        if src is not None:
                            m.imports[alias.asname or alias.name] = (src, alias.name)
                        sub = _module_path(f"{base}.{alias.name}")
                        if sub is not None:
                            m.imports[alias.asname or alias.name] = (sub, "")  # a module
            for node in ast.walk(tree):
                for child in ast.iter_child_nodes(node):
                    m.parents[child] = node
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    m.functions[node.name].append(node)  # type: ignore[arg-type]
            modules[rel] = m
    return modules


class Resolver:
    def __init__(self, modules: dict[str, Module]) -> None:
        self.modules = modules

    def enclosing(self, m: Module, node: ast.AST) -> ast.FunctionDef | None:
        while node in m.parents:
            node = m.parents[node]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return node  # type: ignore[return-value]
        return None

    # -- one expression: the strings it can be ------------------------------------------------

    def strings(self, m: Module, expr: ast.expr, depth: int = 0) -> set[str]:
        if depth > 12:
            raise Unresolved(ast.unparse(expr))
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return {expr.value}
        if isinstance(expr, ast.IfExp):
            return self.strings(m, expr.body, depth + 1) | self.strings(m, expr.orelse, depth + 1)
        if isinstance(expr, (ast.Tuple, ast.List)):  # a sequence of names (walked by a loop): its names
            return set().union(*(self.strings(m, e, depth + 1) for e in expr.elts)) if expr.elts else set()
        if isinstance(expr, ast.JoinedStr):
            return {"re:" + "".join(re.escape(v.value) if isinstance(v, ast.Constant) else ".+" for v in expr.values)}
        if isinstance(expr, ast.Name):
            return self.name(m, expr, depth)
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
            target = m.imports.get(expr.value.id)
            if target is not None and target[1] == "":  # module.NAME
                return self.global_name(self.modules[target[0]], expr.attr, depth)
            return self.loop_value(m, expr, depth)
        if isinstance(expr, ast.Call):
            return self.returns(m, expr, depth)
        raise Unresolved(ast.unparse(expr))

    def global_name(self, m: Module, name: str, depth: int) -> set[str]:
        if m.path == TABLE_MODULE:
            return {TABLE_SENTINEL}
        if name in m.consts:
            value = m.consts[name]
            if isinstance(value, (ast.Tuple, ast.List)):
                return set().union(*(self.strings(m, e, depth + 1) for e in value.elts)) if value.elts else set()
            return self.strings(m, value, depth + 1)
        if name in m.imports:
            src, orig = m.imports[name]
            return self.global_name(self.modules[src], orig, depth + 1)
        raise Unresolved(f"{m.path}: {name}")

    def name(self, m: Module, expr: ast.Name, depth: int) -> set[str]:
        func = self.enclosing(m, expr)
        if func is not None:
            local = self.local(m, func, expr.id, expr, depth)
            if local is not None:
                return local
        return self.global_name(m, expr.id, depth)

    def local(self, m: Module, func: ast.FunctionDef, name: str, at: ast.AST, depth: int) -> set[str] | None:
        """A parameter, a local assignment or a loop variable of ``func`` (None: not a local)."""
        found: set[str] = set()
        bound = False
        for node in ast.walk(func):
            if isinstance(node, (ast.For, ast.comprehension)) and name in _bound(node.target):
                bound = True
                found |= self.element(m, node.target, name, node.iter, depth)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if name in _bound(target):
                        bound = True
                        found |= self.element(m, target, name, node.value, depth, unpack=False)
            elif isinstance(node, ast.NamedExpr) and node.target.id == name:
                bound = True
                found |= self.strings(m, node.value, depth + 1)
        params = [a.arg for a in [*func.args.posonlyargs, *func.args.args]]
        if (m.path, func.name, name) in PASSED_FROM_TABLE:
            return {TABLE_SENTINEL}
        if name in params or name in [a.arg for a in func.args.kwonlyargs]:
            bound = True
            found |= self.arguments(m, func, name, depth)
        return found if bound else None

    def element(self, m: Module, target: ast.expr, name: str, value: ast.expr, depth: int, unpack: bool = True) -> set[str]:
        """The strings ``name`` takes in ``for target in value`` (unpack) or ``target = value``."""
        if unpack:
            if isinstance(value, ast.Name):
                func = self.enclosing(m, value)
                local = self.local(m, func, value.id, value, depth + 1) if func is not None else None
                if local is not None:
                    return local
                found = self._sequence(m, value.id)
                if found is None:
                    return self.global_name(m, value.id, depth + 1)
                m, value = found  # a module's tuple of names: its items are read in that module
            if isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name):
                target_mod = m.imports.get(value.value.id)
                if target_mod is not None and target_mod[0] == TABLE_MODULE:
                    return {TABLE_SENTINEL}
            if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in ("enumerate", "zip", "sorted", "tuple", "list"):
                raise Unresolved(ast.unparse(value))
            if not isinstance(value, (ast.Tuple, ast.List)):
                if TABLE_SENTINEL in self._table_refs(m, value):
                    return {TABLE_SENTINEL}
                root = value
                while isinstance(root, (ast.Call, ast.Attribute)):  # sections.items(): what sections is
                    root = root.func if isinstance(root, ast.Call) else root.value
                func = self.enclosing(m, value)
                if isinstance(root, ast.Name) and func is not None:
                    if self.local(m, func, root.id, root, depth + 1) == {TABLE_SENTINEL}:
                        return {TABLE_SENTINEL}
                raise Unresolved(ast.unparse(value))
            out: set[str] = set()
            for item in value.elts:
                out |= self.element(m, target, name, item, depth + 1, unpack=False)
            return out
        if isinstance(target, ast.Name):
            return self.strings(m, value, depth + 1)
        if isinstance(target, (ast.Tuple, ast.List)):
            index = [i for i, t in enumerate(target.elts) if name in _bound(t)][0]
            if isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(target.elts):
                return self.element(m, target.elts[index], name, value.elts[index], depth + 1, unpack=False)
            return self.strings(m, value, depth + 1)  # unpacked from what a call returned: its strings, all told
        raise Unresolved(ast.unparse(target))

    def _sequence(self, m: Module, name: str) -> tuple[Module, ast.expr] | None:
        value = m.consts.get(name)
        if isinstance(value, (ast.Tuple, ast.List)):
            return m, value
        if name in m.imports:
            src, orig = m.imports[name]
            if src == TABLE_MODULE:
                return None
            return self._sequence(self.modules[src], orig)
        return None

    def _table_refs(self, m: Module, expr: ast.expr) -> set[str]:
        for node in ast.walk(expr):
            if isinstance(node, ast.Name) and m.imports.get(node.id, ("", ""))[0] == TABLE_MODULE:
                return {TABLE_SENTINEL}
        return set()

    def loop_value(self, m: Module, expr: ast.Attribute, depth: int) -> set[str]:
        """``entry.name`` where ``entry`` walks the table."""
        if isinstance(expr.value, ast.Name):
            func = self.enclosing(m, expr)
            if func is not None:
                for node in ast.walk(func):
                    if isinstance(node, (ast.For, ast.comprehension)) and expr.value.id in _bound(node.target):
                        if self._table_refs(m, node.iter):
                            return {TABLE_SENTINEL}
        raise Unresolved(ast.unparse(expr))

    def arguments(self, m: Module, func: ast.FunctionDef, param: str, depth: int) -> set[str]:
        """What the calls of ``func`` in its module pass as ``param``."""
        params = [a.arg for a in [*func.args.posonlyargs, *func.args.args]]
        method = bool(params) and params[0] in ("self", "cls")
        found: set[str] = set()
        calls = 0
        for node in ast.walk(m.tree):
            if not isinstance(node, ast.Call):
                continue
            callee = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id if isinstance(node.func, ast.Name) else None
            if callee != func.name:
                continue
            calls += 1
            for kw in node.keywords:
                if kw.arg == param:
                    found |= self.strings(m, kw.value, depth + 1)
                    break
            else:
                if param in params:
                    index = params.index(param) - (1 if method and isinstance(node.func, ast.Attribute) else 0)
                    if index < len(node.args):
                        found |= self.strings(m, node.args[index], depth + 1)
        if not calls:
            raise Unresolved(f"{m.path}: the parameter {param} of {func.name}, never called in its module")
        return found

    def returns(self, m: Module, call: ast.Call, depth: int) -> set[str]:
        """The strings a call's function returns (str constants in its ``return``s, through the
        helpers it returns the result of)."""
        if isinstance(call.func, ast.Name):
            owner, name = m, call.func.id
            if name not in m.functions and name in m.imports:
                src, name = m.imports[name]
                owner = self.modules[src]
        else:
            raise Unresolved(ast.unparse(call))
        if name not in owner.functions:
            raise Unresolved(ast.unparse(call))
        found: set[str] = set()
        for func in owner.functions[name]:
            for node in ast.walk(func):
                if isinstance(node, ast.Return) and node.value is not None:
                    found |= self._returned(owner, node.value, depth + 1)
        return found

    def _returned(self, m: Module, value: ast.expr, depth: int) -> set[str]:
        if isinstance(value, (ast.Tuple, ast.List)):
            return set().union(*(self._returned(m, e, depth) for e in value.elts)) if value.elts else set()
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in m.functions:
            return self.returns(m, value, depth)
        if isinstance(value, ast.IfExp):
            return self._returned(m, value.body, depth) | self._returned(m, value.orelse, depth)
        if isinstance(value, ast.Constant):
            return {value.value} if isinstance(value.value, str) else set()
        if isinstance(value, ast.Name):
            try:
                return {s for s in self.strings(m, value, depth) if not s.startswith("re:")}
            except Unresolved:
                return set()  # a value, not a name (a frame, a tuple of fields)
        return set()


def _bound(target: ast.AST) -> set[str]:
    """The names an assignment or loop target binds (not those a subscript or attribute reads)."""
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, (ast.Tuple, ast.List)):
        return set().union(*(_bound(e) for e in target.elts)) if target.elts else set()
    if isinstance(target, ast.Starred):
        return _bound(target.value)
    return set()


def _counters_expr(m: Module, expr: ast.expr, aliases: set[str]) -> bool:
    """``counters``, ``self.counters``, ``pipeline.counters`` or a local bound to one."""
    if isinstance(expr, ast.Attribute) and expr.attr == "counters":
        return True
    return isinstance(expr, ast.Name) and (expr.id == "counters" or expr.id in aliases)


def _aliases(func: ast.AST) -> set[str]:
    """Locals bound to a counters mapping: ``c = pipeline.counters``, ``c = svc.get("counters", {})``."""
    out: set[str] = set()
    for node in ast.walk(func):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                pairs = (zip(target.elts, node.value.elts, strict=False) if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple)
                         else [(target, node.value)])
                for t, v in pairs:
                    if isinstance(t, ast.Name) and re.search(r"\bcounters\b|[\"']counters[\"']", ast.unparse(v)):
                        out.add(t.id)
    return out


@dataclass
class Use:
    where: str
    names: set[str]
    written: bool


@lru_cache(maxsize=1)
def uses() -> tuple[list[Use], list[str]]:
    modules = load()
    resolver = Resolver(modules)
    found: list[Use] = []
    unresolved: list[str] = []
    for m in modules.values():
        if m.path == TABLE_MODULE:
            continue
        alias_cache: dict[ast.AST | None, set[str]] = {}
        for node in ast.walk(m.tree):
            key, written = None, False
            if isinstance(node, ast.Subscript):
                func = resolver.enclosing(m, node)
                aliases = alias_cache.setdefault(func, _aliases(func) if func is not None else set())
                if _counters_expr(m, node.value, aliases):
                    key, written = node.slice, isinstance(node.ctx, ast.Store) or isinstance(m.parents.get(node), ast.AugAssign)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "setdefault"):
                func = resolver.enclosing(m, node)
                aliases = alias_cache.setdefault(func, _aliases(func) if func is not None else set())
                if _counters_expr(m, node.func.value, aliases) and node.args:
                    key, written = node.args[0], node.func.attr == "setdefault"
            if key is None:
                continue
            where = f"{m.path}:{node.lineno}"
            try:
                names = resolver.strings(m, key)
            except Unresolved as exc:
                unresolved.append(f"{where}: counters[{ast.unparse(key)}] ({exc})")
                continue
            found.append(Use(where, names - NOT_COUNTED, written))
    return found, unresolved


DECLARED = {c.name for c in table.TABLE}


def _matches(name: str) -> set[str]:
    if name.startswith("re:"):
        return {d for d in DECLARED if re.fullmatch(name[3:], d)}
    return {name} & DECLARED


def test_every_counter_name_in_the_code_is_resolved() -> None:
    _, unresolved = uses()
    assert not unresolved, "counter names the test cannot tell (name them plainly, or teach the test):\n" + "\n".join(unresolved)


def test_every_counter_counted_or_read_is_declared() -> None:
    found, _ = uses()
    undeclared = sorted({f"{n} ({u.where})" for u in found for n in u.names if n != TABLE_SENTINEL and not _matches(n)})
    assert not undeclared, "counted but not in recorderd/counters.py:\n" + "\n".join(undeclared)


def test_every_declared_counter_is_counted_somewhere() -> None:
    found, _ = uses()
    written = {d for u in found if u.written for n in u.names if n != TABLE_SENTINEL for d in _matches(n)}
    dead = sorted(DECLARED - written)
    assert not dead, "declared in recorderd/counters.py but never counted: " + ", ".join(dead)


def test_the_table_is_one_entry_a_name_and_says_what_it_shows() -> None:
    names = Tally(c.name for c in table.TABLE)
    assert [n for n, k in names.items() if k > 1] == []
    for c in table.TABLE:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", c.name), c.name
        assert c.help and "\n" not in c.help, c.name
        assert c.kind in ("counter", "gauge") and c.stats in ("", table.ALWAYS, table.NONZERO), c.name
        assert c.report in ("", table.NOT_RECORDED, table.CAPTURE), c.name
        assert bool(c.report) == bool(c.label[0]), f"{c.name}: a report line has its Japanese and English label"


def test_no_other_hand_kept_list_of_counter_names() -> None:
    """Outside the table, no module keeps a tuple/list/dict mostly of declared names (the
    stats line, metrics, the report's sections and snapshots, status read the table). capture/'s
    own outcome constants (decode.py, encap.py, unrecognised.py's NOT_UNDERSTOOD) are the names its
    code counts under, and stay."""
    allowed = {("capture/encap.py", "COUNTER_NAMES"), ("capture/unrecognised.py", "NOT_UNDERSTOOD")}
    lists = []
    for m in load().values():
        if m.path == TABLE_MODULE:
            continue
        for node in ast.walk(m.tree):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)):
                elts = node.keys if isinstance(node, ast.Dict) else node.elts
                literal = [e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
                named = [s for s in literal if s in DECLARED]
                if len(named) >= 3 and 2 * len(named) >= len(elts):  # (a stream's figures share a few names: not this)
                    owner = m.parents.get(node)
                    name = owner.targets[0].id if isinstance(owner, ast.Assign) and isinstance(owner.targets[0], ast.Name) else ""
                    if (m.path, name) not in allowed:
                        lists.append(f"{m.path}:{node.lineno}")
    assert not lists, "a list of counter names kept by hand (read recorderd/counters.py instead): " + ", ".join(lists)


def test_the_metrics_the_stats_line_and_the_report_read_the_table() -> None:
    """What users see follows the table: an entry's metric with its HELP line, the stats line's
    keys in the table's order, the report's sections and the snapshots they are made from."""
    from recorderd import books
    from recorderd.daemon import Daemon
    from recorderd.metrics import MetricsServer

    server = MetricsServer.__new__(MetricsServer)
    MetricsServer.publish(server, Tally(calls_recorded=3, capture_unrecognised_standing=1, tcp_sip_unframed=2), 0,
                          SimpleNamespace(free_bytes=1))
    body = server.body.decode()
    for c in table.TABLE:
        metric = f"recorderd_{c.name}" + ("_total" if c.kind == "counter" else "")
        assert f"# HELP {metric} {c.help}\n# TYPE {metric} {c.kind}\n" in body
    assert "recorderd_calls_recorded_total 3\n" in body and "recorderd_tcp_sip_unframed_total 2\n" in body
    assert "recorderd_capture_unrecognised_standing 1\n" in body

    records: list[str] = []

    class Grab:
        def info(self, msg: str, *args: object, **kw: object) -> None:
            records.append(msg % args if args else msg)

    import recorderd.daemon as daemon_module

    log, daemon_module.log = daemon_module.log, Grab()  # type: ignore[assignment]
    try:
        Daemon._stats_line(None, SimpleNamespace(counters=Tally(packets=5, encap_vxlan=2)))  # type: ignore[arg-type]
    finally:
        daemon_module.log = log
    keys = [kv.split("=")[0] for kv in records[0].removeprefix("stats: ").split()]
    assert keys == [*table.STATS_ALWAYS, "encap_vxlan"]
    assert "packets=5" in records[0] and "encap_vxlan=2" in records[0]
    assert set(books.SNAPSHOT_KEYS) == {c.name for c in table.TABLE if c.report}


def test_the_report_counts_every_way_a_designated_call_goes_unrecorded(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    """A designated call not recorded because it is an SBC's other face or a B2BUA's second leg of a
    call recorded, or was transferred in from a call not recorded, is in the period report's "calls
    not recorded" (was: the service's snapshots left calls_other_leg and calls_transferred_in out, so
    the manager's report did not account for them), with its Japanese label on the console's page."""
    import time

    from recorderd import books, service
    from recorderd.config import load
    from recorderd.ops import CASEWORK_FILE
    from storage.casework import Casework

    config = load(str(site.config))
    store = service.open_store(config)
    store.open()
    worker = service.store_worker(config)
    try:
        pipeline = service.build_pipeline(config, store, worker.keep)
        service.replay(pipeline, [str(FIXTURES / f"{name}.pcap") for name in ("sbc-two-faces", "b2bua", "transfer-in-not-designated")])
    finally:
        worker.stop()
        store.close()
    now = time.time()
    casework = Casework(str(site.store / CASEWORK_FILE))
    try:  # what the service's books snapshot every ten minutes: SNAPSHOT_KEYS of the live counters
        casework.snapshot_counters(now - 60, now - 60, dict.fromkeys(books.SNAPSHOT_KEYS, 0))
        casework.snapshot_counters(now - 60, now - 1, {k: int(pipeline.counters.get(k, 0)) for k in books.SNAPSHOT_KEYS})
    finally:
        casework.close()
    capsys.readouterr()
    assert site.ctl("report", "--from", "2000-01-01", "--to", "2100-01-01", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["not_recorded"]["calls_other_leg"] == 1
    assert report["not_recorded"]["calls_second_leg"] == 1
    assert report["not_recorded"]["calls_transferred_in"] == 1
    assert report["capture"]["calls_recorded"] == 2
    assert site.ctl("report", "--from", "2000-01-01", "--to", "2100-01-01") == 0
    assert "calls_other_leg 1" in capsys.readouterr().out
    import importlib

    from console import i18n

    importlib.import_module("console.pages.report")  # the report page adds its labels

    assert i18n.MESSAGES["report.key.calls_other_leg"][0] == "録音中の通話の別の面（SBC）"
    assert i18n.MESSAGES["report.key.calls_transferred_in"][0] == "録音対象外の通話からの転送"


def test_what_storage_is_given_comes_from_the_table() -> None:
    """storage/reports.py counts the sections it is given: the one caller gives it the table's."""
    source = (ROOT / "recorderd/ops/reporting.py").read_text(encoding="utf-8")
    assert "from ..counters import REPORT" in source and "period_report(ctx.store, ctx.casework, lo, hi, REPORT)" in source
    calls = [f for f in ROOT.joinpath("recorderd").rglob("*.py") if "period_report(" in f.read_text(encoding="utf-8")]
    assert [str(f.relative_to(ROOT)) for f in calls] == ["recorderd/ops/reporting.py"]


def test_replaying_every_fixture_counts_only_declared_names(site: Site) -> None:
    """At run time too: every fixture (remote mirrors, cut packets, fragments, TCP, transfers,
    SBC faces, MPLS not understood, ...) through one pipeline into a real store, and every name in
    its counters is declared; so is every name a fixture's JSON expects."""
    from recorderd import service
    from recorderd.config import load

    config = load(str(site.config))
    store = service.open_store(config)
    store.open()
    worker = service.store_worker(config)
    pcaps = sorted(FIXTURES.glob("*.pcap"))
    try:
        pipeline = service.build_pipeline(config, store, worker.keep)
        service.replay(pipeline, [str(p) for p in pcaps])
    finally:
        worker.stop()
        store.close()
    assert len(pcaps) > 40 and pipeline.counters["packets"] > 10_000
    assert sorted(set(pipeline.counters) - DECLARED) == []
    expected = {k for p in pcaps if p.with_suffix(".json").is_file()
                for k in json.loads(p.with_suffix(".json").read_text(encoding="utf-8")).get("counters", {})}
    assert expected and sorted(expected - DECLARED) == []
