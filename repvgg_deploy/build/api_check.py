"""Static check: every TensorRT name the code uses exists in the TensorRT versions it runs on.

The names of each TensorRT version come from ``trt_api_names.json`` (beside this file), read
from the compiled bindings by ``tools/trt_api_names.py``. This module parses Python source
(``ast``, nothing is imported or run) and finds:

1. attribute chains rooted at the TensorRT module: ``trt.BuilderFlag.FP16`` -> ``BuilderFlag.FP16``,
   ``trt.Runtime`` -> ``Runtime``. The module is any name ``trt``, any ``import tensorrt [as X]``
   and any ``X = import_tensorrt()``;
2. methods and properties used on TensorRT objects whose type is known from a small table of
   constructors and factory methods (``trt.Builder(...)`` -> ``Builder``,
   ``builder.create_builder_config()`` -> ``IBuilderConfig``, ``runtime.deserialize_cuda_engine()``
   -> ``ICudaEngine`` ...), from annotations (``engine: "trt.ICudaEngine" = ...``) or from a
   ``# trt-type: ICudaEngine`` comment on the assignment line; ``self.x`` keeps its type across
   the methods of a class.

Which versions a line runs on: all supported majors, narrowed by enclosing
``if TRT_MAJOR <op> N:`` / ``else:`` blocks (and after an ``if TRT_MAJOR <op> N:`` block that
ends in ``return``/``raise``, by the rest of the block) (``TRT_MAJOR`` may be a name, an attribute or a call
``trt_major(...)``; ``<op>`` is one of ``< <= > >= == !=``) and by a ``# trt-only: 10`` comment
on a ``def``/``class``/statement line. A name is checked against every version of those majors in
the data file (for 10: 10.0.1 and 10.16.1.11, so "10" means all of 10.x).
"""
from __future__ import annotations

import ast
import io
import json
import operator
import re
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

__all__ = ["Use", "Violation", "load_api_names", "collect_uses", "check_source", "check_paths", "DATA_FILE",
           "RETURNS", "CONSTRUCTORS"]

DATA_FILE = Path(__file__).with_name("trt_api_names.json")

# Factory methods: (receiver type, method) -> returned type.
RETURNS: Dict[Tuple[str, str], str] = {
    ("Builder", "create_network"): "INetworkDefinition",
    ("Builder", "create_builder_config"): "IBuilderConfig",
    ("Builder", "create_optimization_profile"): "IOptimizationProfile",
    ("Builder", "build_serialized_network"): "IHostMemory",
    ("IBuilderConfig", "create_timing_cache"): "ITimingCache",
    ("IBuilderConfig", "get_timing_cache"): "ITimingCache",
    ("ITimingCache", "serialize"): "IHostMemory",
    ("INetworkDefinition", "get_input"): "ITensor",
    ("INetworkDefinition", "get_output"): "ITensor",
    ("OnnxParser", "get_error"): "ParserError",
    ("Runtime", "deserialize_cuda_engine"): "ICudaEngine",
    ("ICudaEngine", "create_execution_context"): "IExecutionContext",
    ("ICudaEngine", "create_engine_inspector"): "EngineInspector",
    ("ICudaEngine", "serialize"): "IHostMemory",
    ("IExecutionContext", "engine"): "ICudaEngine",
}
# trt.X(...) constructs an X.
CONSTRUCTORS = {"Builder", "Runtime", "OnnxParser", "Logger", "Refitter", "OnnxParserRefitter"}
_IMPORTERS = {"import_tensorrt"}
_VERSION_NAMES = {"TRT_MAJOR"}
_VERSION_FUNCS = {"trt_major"}
_OPS = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
        ast.Eq: operator.eq, ast.NotEq: operator.ne}
_FLIP = {ast.Lt: ast.Gt, ast.LtE: ast.GtE, ast.Gt: ast.Lt, ast.GtE: ast.LtE, ast.Eq: ast.Eq, ast.NotEq: ast.NotEq}
_PRAGMA_ONLY = re.compile(r"#\s*trt-only:\s*([0-9][0-9 ,]*)")
_PRAGMA_TYPE = re.compile(r"#\s*trt-type:\s*([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Use:
    file: str
    line: int
    name: str            # "BuilderFlag.FP16", "IExecutionContext.execute_async_v3", "Runtime"
    majors: Tuple[int, ...]
    via: str             # "module" (trt.X.Y) or "object" (typed receiver)


@dataclass(frozen=True)
class Violation:
    use: Use
    missing_in: Tuple[str, ...]

    def __str__(self) -> str:
        return (f"{self.use.file}:{self.use.line}: trt {self.use.name} (used for TensorRT "
                f"{'/'.join(map(str, self.use.majors))}) does not exist in TensorRT {', '.join(self.missing_in)}")


def load_api_names(path: Union[str, Path] = DATA_FILE) -> Dict[str, Set[str]]:
    """version -> set of names, from the committed data file."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {v: set(entry["names"]) for v, entry in data["versions"].items()}


def _major(version: str) -> int:
    return int(version.split(".")[0])


def _pragmas(source: str) -> Tuple[Dict[int, Tuple[int, ...]], Dict[int, str]]:
    only: Dict[int, Tuple[int, ...]] = {}
    types: Dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type != tokenize.COMMENT:
                continue
            m = _PRAGMA_ONLY.search(tok.string)
            if m:
                only[tok.start[0]] = tuple(int(x) for x in re.split(r"[ ,]+", m.group(1).strip()) if x)
            m = _PRAGMA_TYPE.search(tok.string)
            if m:
                types[tok.start[0]] = m.group(1)
    except (tokenize.TokenError, IndentationError):
        pass
    return only, types


def _chain(node: ast.AST) -> Optional[List[str]]:
    """``a.b.c`` -> ["a", "b", "c"]; None if not a pure Name/Attribute chain."""
    parts: List[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


def _is_version_expr(node: ast.AST) -> bool:
    if isinstance(node, ast.Name):
        return node.id in _VERSION_NAMES
    if isinstance(node, ast.Attribute):
        return node.attr in _VERSION_NAMES
    if isinstance(node, ast.Call):
        f = node.func
        return (isinstance(f, ast.Name) and f.id in _VERSION_FUNCS) or (isinstance(f, ast.Attribute) and f.attr in _VERSION_FUNCS)
    return False


def _branch_majors(test: ast.AST, current: Tuple[int, ...]) -> Optional[Tuple[Tuple[int, ...], Tuple[int, ...]]]:
    """(majors of the body, majors of the else branch) for ``TRT_MAJOR <op> N``; None for other tests."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and len(test.comparators) == 1):
        return None
    left, op, right = test.left, type(test.ops[0]), test.comparators[0]
    if _is_version_expr(right) and isinstance(left, ast.Constant):
        left, right, op = right, left, _FLIP.get(op, op)
    if not (_is_version_expr(left) and isinstance(right, ast.Constant) and isinstance(right.value, int)):
        return None
    if op not in _OPS:
        return None
    body = tuple(m for m in current if _OPS[op](m, right.value))
    return body, tuple(m for m in current if m not in body)


def _annotation_type(node: Optional[ast.AST]) -> Optional[str]:
    """``"trt.ICudaEngine"`` / ``trt.ICudaEngine`` / ``Optional["trt.X"]`` -> ``ICudaEngine``."""
    if node is None:
        return None
    text = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ast.unparse(node)
    m = re.search(r"\b(?:trt|tensorrt)\.([A-Za-z_][A-Za-z0-9_]*)", text)
    return m.group(1) if m else None


class _Checker:
    def __init__(self, source: str, filename: str, majors: Tuple[int, ...]) -> None:
        self.source = source
        self.filename = filename
        self.all_majors = majors
        self.only, self.type_comments = _pragmas(source)
        self.tree = ast.parse(source, filename=filename)
        self.aliases: Set[str] = {"trt"}
        self.uses: List[Use] = []
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name == "tensorrt":
                        self.aliases.add(a.asname or "tensorrt")
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                f = node.value.func
                fname = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                if fname in _IMPORTERS:
                    for t in node.targets:
                        if isinstance(t, ast.Name):
                            self.aliases.add(t.id)

    # ------------------------------------------------------------------ types

    def _type_of(self, node: ast.AST, env: Dict[str, Optional[str]], cls_env: Dict[str, Optional[str]]) -> Optional[str]:
        if isinstance(node, ast.Name):
            return env.get(node.id)
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                return cls_env.get(node.attr)
            owner = self._type_of(node.value, env, cls_env)
            return RETURNS.get((owner, node.attr)) if owner else None
        if isinstance(node, ast.Call):
            chain = _chain(node.func)
            if chain and len(chain) == 2 and chain[0] in self.aliases and chain[1] in CONSTRUCTORS:
                return chain[1]
            if isinstance(node.func, ast.Attribute):
                owner = self._type_of(node.func.value, env, cls_env)
                if owner:
                    return RETURNS.get((owner, node.func.attr))
        return None

    def _assign_types(self, body: Sequence[ast.AST], env: Dict[str, Optional[str]], cls_env: Dict[str, Optional[str]],
                      self_target: Optional[Dict[str, Optional[str]]] = None) -> None:
        """Flow-insensitive: a name assigned one TensorRT type everywhere in ``body`` has that type."""

        def bind(store: Dict[str, Optional[str]], key: str, typ: Optional[str]) -> None:
            if key in store and store[key] != typ:
                store[key] = None  # assigned different things: unknown
            else:
                store[key] = typ

        for _ in range(2):  # twice, so that later assignments feed earlier-declared names
            for stmt in body:
                for node in ast.walk(stmt):
                    targets: List[ast.AST] = []
                    value: Optional[ast.AST] = None
                    typ: Optional[str] = None
                    if isinstance(node, ast.Assign):
                        targets, value = node.targets, node.value
                    elif isinstance(node, ast.AnnAssign):
                        targets, value = [node.target], node.value
                        typ = _annotation_type(node.annotation)
                    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        for a in node.args.args + node.args.kwonlyargs + node.args.posonlyargs:
                            t = _annotation_type(a.annotation)
                            if t:
                                bind(env, a.arg, t)
                        continue
                    else:
                        continue
                    if typ is None:
                        typ = self.type_comments.get(getattr(node, "lineno", -1))
                    if typ is None and isinstance(value, ast.Constant) and value.value is None:
                        continue  # x = None before x = <TensorRT object>: still that type (Optional)
                    if typ is None and value is not None:
                        typ = self._type_of(value, env, cls_env)
                    for t in targets:
                        if isinstance(t, ast.Name):
                            if typ is not None or t.id in env:
                                bind(env, t.id, typ)
                        elif (self_target is not None and isinstance(t, ast.Attribute)
                              and isinstance(t.value, ast.Name) and t.value.id == "self"):
                            if typ is not None or t.attr in self_target:
                                bind(self_target, t.attr, typ)

    # ------------------------------------------------------------------ walk

    def run(self) -> List[Use]:
        self._block(self.tree.body, self.all_majors, {}, {})
        return self.uses

    def _restrict(self, node: ast.AST, majors: Tuple[int, ...]) -> Tuple[int, ...]:
        line = getattr(node, "lineno", None)
        if line is not None and line in self.only:
            return tuple(m for m in majors if m in self.only[line])
        return majors

    def _block(self, body: Sequence[ast.stmt], majors: Tuple[int, ...], env: Dict[str, Optional[str]],
               cls_env: Dict[str, Optional[str]]) -> None:
        for stmt in body:
            self._stmt(stmt, majors, env, cls_env)
            # ``if TRT_MAJOR < 11: ...; return`` -> what follows runs on the other majors only
            if isinstance(stmt, ast.If) and not stmt.orelse and stmt.body \
                    and isinstance(stmt.body[-1], (ast.Return, ast.Raise, ast.Continue, ast.Break)):
                split = _branch_majors(stmt.test, self._restrict(stmt, majors))
                if split is not None:
                    majors = split[1]

    def _stmt(self, stmt: ast.stmt, majors: Tuple[int, ...], env: Dict[str, Optional[str]],
              cls_env: Dict[str, Optional[str]]) -> None:
        majors = self._restrict(stmt, majors)
        if isinstance(stmt, ast.ClassDef):
            for b in stmt.bases + [d for d in stmt.decorator_list]:
                self._expr(b, majors, env, cls_env)
            attrs: Dict[str, Optional[str]] = {}
            for item in stmt.body:  # class-level annotations: x: "trt.ICudaEngine"
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    t = _annotation_type(item.annotation)
                    if t:
                        attrs[item.target.id] = t
            for _ in range(2):  # self.x = ... in any method (twice: methods may come in any order)
                for item in stmt.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        self._assign_types(item.body, dict(env), attrs, self_target=attrs)
            self._block(stmt.body, majors, dict(env), attrs)
            return
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for d in stmt.decorator_list:
                self._expr(d, majors, env, cls_env)
            local = dict(env)
            for a in stmt.args.args + stmt.args.kwonlyargs + stmt.args.posonlyargs:
                local[a.arg] = _annotation_type(a.annotation)
            self._assign_types(stmt.body, local, cls_env)
            self._block(stmt.body, majors, local, cls_env)
            return
        if isinstance(stmt, ast.If):
            split = _branch_majors(stmt.test, majors)
            self._expr(stmt.test, majors, env, cls_env)
            if split is None:
                self._block(stmt.body, majors, env, cls_env)
                self._block(stmt.orelse, majors, env, cls_env)
            else:
                self._block(stmt.body, split[0], env, cls_env)
                self._block(stmt.orelse, split[1], env, cls_env)
            return
        # Any other statement: visit its expressions, recurse into nested statement lists.
        for field_name, value in ast.iter_fields(stmt):
            if isinstance(value, list) and value and all(isinstance(v, ast.stmt) for v in value):
                self._block(value, majors, env, cls_env)
            elif isinstance(value, list):
                for v in value:
                    if isinstance(v, ast.excepthandler):
                        if v.type is not None:
                            self._expr(v.type, majors, env, cls_env)
                        self._block(v.body, majors, env, cls_env)
                    elif isinstance(v, ast.AST):
                        self._expr(v, majors, env, cls_env)
            elif isinstance(value, ast.AST):
                self._expr(value, majors, env, cls_env)

    def _expr(self, node: ast.AST, majors: Tuple[int, ...], env: Dict[str, Optional[str]],
              cls_env: Dict[str, Optional[str]]) -> None:
        if isinstance(node, ast.IfExp):
            split = _branch_majors(node.test, majors)
            self._expr(node.test, majors, env, cls_env)
            self._expr(node.body, split[0] if split else majors, env, cls_env)
            self._expr(node.orelse, split[1] if split else majors, env, cls_env)
            return
        if isinstance(node, ast.Lambda):
            self._expr(node.body, majors, env, cls_env)
            return
        if isinstance(node, ast.Attribute):
            chain = _chain(node)
            if chain and chain[0] in self.aliases and len(chain) >= 2:
                name = ".".join(chain[1:3])  # trt.Class.member; deeper parts belong to the member's value
                if not chain[1].startswith("__") or chain[1] == "__version__":
                    if len(chain) >= 3 and chain[2].startswith("__"):
                        name = chain[1]
                    self._use(node, name, majors, "module")
                return  # nothing else to see inside a pure chain
            owner = self._type_of(node.value, env, cls_env)
            if owner and not node.attr.startswith("__"):
                self._use(node, f"{owner}.{node.attr}", majors, "object")
            self._expr(node.value, majors, env, cls_env)
            return
        for child in ast.iter_child_nodes(node):
            self._expr(child, majors, env, cls_env)

    def _use(self, node: ast.AST, name: str, majors: Tuple[int, ...], via: str) -> None:
        if majors:
            self.uses.append(Use(self.filename, getattr(node, "lineno", 0), name, tuple(majors), via))


def collect_uses(source: str, filename: str = "<source>", majors: Optional[Iterable[int]] = None,
                 names: Optional[Dict[str, Set[str]]] = None) -> List[Use]:
    """Every TensorRT name ``source`` uses, with the majors its code path runs on."""
    if majors is None:
        names = names if names is not None else load_api_names()
        majors = sorted({_major(v) for v in names})
    return _Checker(source, filename, tuple(majors)).run()


def check_source(source: str, filename: str = "<source>", names: Optional[Dict[str, Set[str]]] = None
                 ) -> List[Violation]:
    """Violations in one source text: names absent from some version their code path runs on."""
    names = names if names is not None else load_api_names()
    by_major: Dict[int, List[str]] = {}
    for v in names:
        by_major.setdefault(_major(v), []).append(v)
    out = []
    for use in collect_uses(source, filename, majors=sorted(by_major), names=names):
        missing = tuple(v for m in use.majors for v in sorted(by_major.get(m, [])) if use.name not in names[v])
        if missing:
            out.append(Violation(use, missing))
    return out


def check_paths(paths: Iterable[Union[str, Path]], names: Optional[Dict[str, Set[str]]] = None,
                root: Optional[Path] = None) -> Tuple[List[Violation], List[Use]]:
    """Check every ``.py`` file under ``paths``; returns (violations, all uses)."""
    names = names if names is not None else load_api_names()
    violations: List[Violation] = []
    uses: List[Use] = []
    majors = sorted({_major(v) for v in names})
    for p in paths:
        p = Path(p)
        files = sorted(p.rglob("*.py")) if p.is_dir() else [p]
        for f in files:
            rel = str(f.relative_to(root)) if root else str(f)
            source = f.read_text(encoding="utf-8")
            if "trt" not in source and "tensorrt" not in source:
                continue
            violations += check_source(source, rel, names)
            uses += collect_uses(source, rel, majors=majors)
    return violations, uses


if __name__ == "__main__":  # python -m repvgg_deploy.build.api_check [paths...]
    import sys

    targets = sys.argv[1:] or [str(Path(__file__).resolve().parents[1])]
    found, used = check_paths(targets)
    for v in found:
        print(v)
    print(f"{len(used)} TensorRT name uses checked, {len(found)} violation(s)", file=sys.stderr)
    sys.exit(1 if found else 0)
