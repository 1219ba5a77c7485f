#!/usr/bin/env python3
"""List the names of TensorRT's Python API from the binding wheels, without loading TensorRT.

The ``tensorrt-cuXX-bindings`` wheels on PyPI (about 1.3 MB each) hold the compiled pybind11
module ``tensorrt_bindings/tensorrt.so``. It cannot be imported without ``libnvinfer``, so
this tool reads the machine code instead:

1. every ``lea reg, [rip + disp32]`` in ``.text`` whose target lies in ``.rodata`` is a string
   the code passes around; identifier-like strings are pybind11 names (classes, enum values,
   methods, properties, argument names);
2. every ``call rel32`` into a member of ``pybind11::class_<T>`` / ``pybind11::enum_<T>`` (known
   from the ELF symbol table; ``T`` decoded from the mangled name) marks "class ``T`` now";
   identical template instances that the compiler folded (``class_<X>::def_property`` serving
   every class) are recognized (called between many different classes) and take the class of
   the calls around them;
3. a name inside a ``class_<T>::...`` instance (GCC's ``.constprop`` clones carry it as a
   constant) belongs to ``T`` and to the classes of the places that call that instance; a name
   inside a ``bind*`` function belongs to the class of the next such call (``.def("name", ...)``
   loads the name, then calls ``class_<T>::def``) and, for inlined code, of the previous one;
4. a C++ type keeps its C++ name when that name is a string of the module, else it takes the
   CamelCase name loaded just before the first call into it (``py::class_<IBuilder>(m,
   "Builder")``, ``IParser`` -> ``OnnxParser``, ``IParserError`` -> ``ParserError``);
5. ``tensorrt_bindings/__init__.py`` adds the pure-Python names (``__version__``, ``volume``,
   ``nptype``, ``Logger.WARNING`` ...).

The result over-approximates a little (argument names such as ``IBuilderConfig.flag`` are
listed as members), which is harmless for the use it is for: proving that a name the project
uses exists. Names that TensorRT removed are absent: ``BuilderFlag.FP16`` and
``IBuilderConfig.int8_calibrator`` are in 10.x and not in 11.x.

Usage::

    tools/trt_api_names.py --download                     # default versions -> .whl/, then write the JSON
    tools/trt_api_names.py .whl/tensorrt_cu13_bindings-11.4.0.106-*.whl -o names.json
    tools/trt_api_names.py --check-known                  # assert the known facts on the committed JSON

The committed data file is ``repvgg_deploy/build/trt_api_names.json``; the test
``tests/test_trt_api.py`` checks the project's code against it (no network needed).
"""
from __future__ import annotations

import argparse
import ast
import bisect
import datetime as _dt
import glob
import hashlib
import json
import re
import struct
import subprocess
import sys
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "repvgg_deploy" / "build" / "trt_api_names.json"
WHEEL_DIR = ROOT / ".whl"
# The oldest supported 10.x, the newest 10.x and the newest 11.x on PyPI when this was written.
DEFAULT_VERSIONS = ("10.0.1", "10.16.1.11", "11.4.0.106")

IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Names of pybind11 machinery that every class has; not API.
PYBIND_INTERNAL = {"_pybind11_conduit_v1_", "__init__", "__new__", "__del__", "__repr__", "__str__", "__hash__",
                   "__eq__", "__ne__", "__int__", "__index__", "__getstate__", "__setstate__", "__members__",
                   "__entries", "__doc__", "__module__", "__name__", "__qualname__", "__dict__", "__len__",
                   "__getitem__", "__setitem__", "__iter__", "__contains__", "__bool__", "__lt__", "__le__",
                   "__gt__", "__ge__", "__and__", "__or__", "__xor__", "__invert__", "__rand__", "__ror__",
                   "__rxor__", "__format__", "__weakref__", "__class__", "self", "other", "arg0", "arg1", "arg2",
                   "cls", "kwargs", "args"}
NESTED_OK = {"Severity"}  # nested classes reachable as attributes (trt.ILogger.Severity)
KNOWN_FACTS = (
    # (name, present in 10.x, present in 11.x)
    ("BuilderFlag.FP16", True, False),
    ("BuilderFlag.INT8", True, False),
    ("IBuilderConfig.int8_calibrator", True, False),
    ("NetworkDefinitionCreationFlag.STRONGLY_TYPED", True, True),
    ("IExecutionContext.execute_async_v3", True, True),
    ("IExecutionContext.execute_async_v2", False, False),
    ("Builder.build_serialized_network", True, True),
    ("Builder.build_engine", False, False),
    ("IBuilderConfig.set_memory_pool_limit", True, True),
    ("IBuilderConfig.builder_optimization_level", True, True),
    ("IBuilderConfig.set_timing_cache", True, True),
    ("ICudaEngine.get_tensor_name", True, True),
    ("OnnxParser.get_error", True, True),
    ("ParserError.node_name", True, True),
    ("Logger.WARNING", True, True),
)


# --------------------------------------------------------------------------- ELF reading

class Elf:
    """The little of ELF64 (x86-64, little-endian) that the scan needs."""

    def __init__(self, data: bytes) -> None:
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            raise ValueError("not a little-endian ELF64 file")
        machine, = struct.unpack_from("<H", data, 0x12)
        if machine != 0x3E:
            raise ValueError(f"not an x86-64 ELF file (e_machine {machine:#x})")
        self.data = data
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        raw = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
        names_off = raw[shstrndx][4]
        self.sections: Dict[str, Dict[str, int]] = {}
        for name, typ, flags, addr, off, size in raw:
            self.sections[self.cstr(names_off + name)] = dict(type=typ, flags=flags, addr=addr, off=off, size=size)

    def cstr(self, off: int, limit: int = 1 << 16) -> str:
        end = self.data.find(b"\0", off, off + limit)
        return self.data[off:end if end >= 0 else off].decode("utf-8", "replace")

    def functions(self) -> List[Tuple[int, int, str]]:
        """(address, size, mangled name) of every sized function symbol, sorted."""
        sym = self.sections.get(".symtab") or self.sections.get(".dynsym")
        strtab = self.sections.get(".strtab" if ".symtab" in self.sections else ".dynstr")
        if not sym or not strtab:
            return []
        out = []
        for i in range(sym["size"] // 24):
            st_name, st_info, _other, _shndx, value, size = struct.unpack_from("<IBBHQQ", self.data, sym["off"] + i * 24)
            if st_info & 0xF == 2 and size:  # STT_FUNC
                out.append((value, size, self.cstr(strtab["off"] + st_name)))
        out.sort()
        return out


# --------------------------------------------------------------------------- mangled names

def _source_name(s: str, i: int) -> Tuple[Optional[str], int]:
    m = re.match(r"\d+", s[i:])
    if not m:
        return None, i
    n = int(m.group())
    j = i + len(m.group())
    return s[j:j + n], j + n


def pybind_owner(mangled: str) -> Optional[Tuple[str, str]]:
    """For a member of ``pybind11::class_<T, ...>`` / ``enum_<T>``: (kind, C++ name of T).

    Only plain (possibly nested) class names are decoded, e.g. ``N8nvinfer114IBuilderConfigE``
    -> ``nvinfer1::IBuilderConfig``; templates and substitutions give ``None``.
    """
    m = re.match(r"_ZN[RKO]*8pybind11(6class_|5enum_)I", mangled)
    if not m:
        return None
    kind = "enum" if "enum" in m.group(1) else "class"
    i = m.end()
    parts: List[str] = []
    if mangled.startswith("N", i):
        i += 1
        while i < len(mangled) and mangled[i] != "E":
            name, j = _source_name(mangled, i)
            if name is None:
                return None
            parts.append(name)
            i = j
    else:
        name, _ = _source_name(mangled, i)
        if name is None:
            return None
        parts.append(name)
    parts = [p for p in parts if not re.fullmatch(r"v_\d+_\d+", p)]  # inline namespace nvinfer1::v_1_0
    return kind, "::".join(parts)


# --------------------------------------------------------------------------- the scan

def scan_so(data: bytes) -> Dict[str, Set[str]]:
    """Map Python class name -> member names (``""`` holds module-level names)."""
    elf = Elf(data)
    text, ro = elf.sections[".text"], elf.sections[".rodata"]
    code = data[text["off"]:text["off"] + text["size"]]
    base = text["addr"]
    ro_lo, ro_hi = ro["addr"], ro["addr"] + ro["size"]

    funcs = elf.functions()
    starts = [f[0] for f in funcs]
    owner_at: Dict[int, str] = {}  # function start -> C++ type of the class_/enum_ it is a member of
    module_def_at: Set[int] = set()
    for addr, _size, name in funcs:
        owner = pybind_owner(name)
        if owner:
            owner_at[addr] = owner[1]
        elif name.startswith("_ZN8pybind117module_3def"):
            module_def_at.add(addr)

    def func_at(addr: int) -> Optional[int]:
        j = bisect.bisect_right(starts, addr) - 1
        if j >= 0 and addr < funcs[j][0] + funcs[j][1]:
            return j
        return None

    # 1. String references: REX.W(+R) lea r64, [rip + disp32] into .rodata, identifier-like.
    refs: List[Tuple[int, str]] = []
    for m in re.finditer(rb"[\x48\x4c]\x8d[\x05\x0d\x15\x1d\x25\x2d\x35\x3d]", code):
        i = m.start()
        disp, = struct.unpack_from("<i", code, i + 3)
        target = base + i + 7 + disp
        if ro_lo <= target < ro_hi:
            value = elf.cstr(ro["off"] + target - ro_lo, 256)
            if IDENT.match(value):
                refs.append((base + i, value))

    # 2. Markers: calls (e8 rel32) into a class_<T>/enum_<T> member or module_::def, grouped by caller.
    markers: Dict[int, List[List]] = defaultdict(list)  # caller index -> [[addr, T, target], ...]
    callers_of: Dict[int, List[Tuple[int, int]]] = defaultdict(list)  # target -> [(caller index, position)]
    for m in re.finditer(rb"\xe8", code):
        i = m.start()
        if i + 5 > len(code):
            break
        rel, = struct.unpack_from("<i", code, i + 1)
        target = base + i + 5 + rel
        if target in owner_at or target in module_def_at:
            caller = func_at(base + i)
            if caller is None:
                continue
            markers[caller].append([base + i, owner_at.get(target, ""), target])
    # Identical template instances are folded: a call may land in class_<Other>::def_property. Such a
    # call shows up as a short run of another type between calls of one type: give it that type.
    for caller, ms in markers.items():
        runs: List[List[int]] = []  # [first index, last index]
        for k, mk in enumerate(ms):
            if runs and ms[runs[-1][0]][1] == mk[1]:
                runs[-1][1] = k
            else:
                runs.append([k, k])
        length: Dict[str, int] = defaultdict(int)
        for a, b in runs:
            length[ms[a][1]] = max(length[ms[a][1]], b - a + 1)
        for r in range(1, len(runs) - 1):
            a, b = runs[r]
            t, before, after = ms[a][1], ms[runs[r - 1][0]][1], ms[runs[r + 1][0]][1]
            if before == after and t != before and length[t] > b - a + 1:
                for k in range(a, b + 1):
                    ms[k][1] = before
    # A folded instance called for many classes (class_<X>::def_property(name, cpp_function, ...) is
    # the same code for every X) is no evidence of its own type: such calls take the type of the
    # next reliable call in the same function (the chain they are part of continues there).
    contexts: Dict[int, Set[str]] = defaultdict(set)
    for caller, ms in markers.items():
        for k, mk in enumerate(ms):
            for n in (k - 1, k + 1):
                if 0 <= n < len(ms) and ms[n][1] != mk[1]:
                    contexts[mk[2]].add(ms[n][1])
    folded = {target for target, types in contexts.items() if len(types) >= 3}
    for caller, ms in markers.items():
        nxt = None
        for k in range(len(ms) - 1, -1, -1):
            if ms[k][2] in folded:
                if nxt is not None:
                    ms[k][1] = nxt
            else:
                nxt = ms[k][1]
        for k, (addr, t, target) in enumerate(ms):
            callers_of[target].append((caller, k))

    members: Dict[str, Set[str]] = defaultdict(set)  # C++ type ("" = module) -> names
    first_name: Dict[str, Tuple[int, int, str]] = {}  # C++ type -> (first call, name address, CamelCase name)
    own_name: Dict[str, str] = {}  # C++ type -> name loaded inside its own (cloned) constructor
    marker_addrs = {c: [mk[0] for mk in ms] for c, ms in markers.items()}
    for addr, name in refs:
        j = func_at(addr)
        if j is None:
            continue
        start = funcs[j][0]
        if start in owner_at:  # inside class_<T>::def... (a clone with the name as a constant)
            members[owner_at[start]].add(name)
            if _looks_camel(name) and _is_ctor(funcs[j][2]):
                own_name.setdefault(owner_at[start], name)  # enum_<T>(scope, "PyName") as a clone
            for caller, k in callers_of.get(start, ()):
                members[markers[caller][k][1]].add(name)
            continue
        addrs = marker_addrs.get(j)
        if not addrs:
            continue
        k = bisect.bisect_right(addrs, addr)
        # .def("name", ...) loads "name" before it calls into class_<T>; pybind11 code inlined into the
        # bind function has no call of its own, so a name between a call for P and one for N is
        # listed under both (over-approximate rather than miss a member).
        if k < len(addrs):
            t = markers[j][k][1]
            members[t].add(name)
            if _looks_camel(name) and t:
                # py::class_<T>(scope, "PyName"): the CamelCase string nearest before the first call into T
                first_call = markers[j][k][0]
                prev = first_name.get(t)
                if prev is None or first_call < prev[0] or (first_call == prev[0] and addr > prev[1]):
                    first_name[t] = (first_call, addr, name)
        if _looks_camel(name):
            members[""].add(name)  # a CamelCase string in a bind function names a class or enum
        if k > 0 and not _looks_camel(name):
            members[markers[j][k - 1][1]].add(name)

    referenced = {name for _addr, name in refs}
    out: Dict[str, Set[str]] = defaultdict(set)
    for cxx, names in members.items():
        if not cxx:
            out[""].update(names)
            continue
        # Most classes keep their C++ name; the others (IBuilder -> Builder, IParser -> OnnxParser)
        # never load their C++ name as a string.
        short = cxx.split("::")[-1]
        if short in referenced:
            py = short
        else:
            py = own_name.get(cxx) or (first_name[cxx][2] if cxx in first_name else short)
        out[py].update(n for n in names if (n != py and not _looks_camel(n)) or n in NESTED_OK)
        out[""].add(py)
    return out


def _looks_camel(name: str) -> bool:
    return bool(re.match(r"^[A-Z][A-Za-z0-9]*[a-z][A-Za-z0-9]*$", name))


def _is_ctor(mangled: str) -> bool:
    return bool(re.search(r"EEC[12]I", mangled)) or bool(re.search(r"EEC[12]E", mangled))


def scan_init(source: str) -> Dict[str, Set[str]]:
    """Pure-Python names that ``tensorrt/__init__.py`` adds: functions, assignments, setattr loops."""
    out: Dict[str, Set[str]] = defaultdict(set)
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            out[""].add(node.name)
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name) and (not t.id.startswith("_") or t.id == "__version__"):
                    out[""].add(t.id)
                elif isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name):
                    out[t.value.id].add(t.attr)
    # ``for attr, value in ILogger.Severity.__members__.items(): setattr(Logger, attr, value)``
    if re.search(r"setattr\(\s*Logger\s*,\s*attr", source):
        out["Logger"].add("__severity_members__")
    return out


def names_from_wheel(path: Path) -> Tuple[str, List[str]]:
    """(version, sorted names) of one binding wheel."""
    with zipfile.ZipFile(path) as z:
        so_name = next((n for n in z.namelist() if re.search(r"(^|/)tensorrt\.so$", n)), None)
        if so_name is None:
            so_name = next((n for n in z.namelist() if re.search(r"tensorrt[^/]*\.so$", n)), None)
        if so_name is None:
            raise SystemExit(f"{path}: no tensorrt*.so inside")
        init_name = str(Path(so_name).parent / "__init__.py")
        so = z.read(so_name)
        init = z.read(init_name).decode() if init_name in z.namelist() else ""
    version_match = re.search(r"__version__\s*=\s*[\"']([^\"']+)", init)
    version = version_match.group(1) if version_match else re.search(r"-(\d+(?:\.\d+)+)-", path.name).group(1)
    by_class = scan_so(so)
    for cls, names in scan_init(init).items():
        by_class[cls].update(names)
    if "__severity_members__" in by_class.get("Logger", ()):
        by_class["Logger"].discard("__severity_members__")
        by_class["Logger"].update(by_class.get("Severity", ()))
        by_class["Logger"].add("Severity")
        by_class["ILogger"].add("Severity")
    names: Set[str] = set()
    for cls, members in by_class.items():
        for member in members:
            if member in PYBIND_INTERNAL or member.startswith("pybind11_"):
                continue
            names.add(f"{cls}.{member}" if cls else member)
        if cls:
            names.add(cls)
    return version, sorted(names)


# --------------------------------------------------------------------------- download / CLI

def package_for(version: str) -> str:
    # 10.x: the CUDA 12 build (cu13 bindings start at 10.13); 11.x: the CUDA 13 build.
    return "tensorrt-cu12-bindings" if version.startswith("10.") else "tensorrt-cu13-bindings"


def download(versions: Iterable[str], dest: Path) -> List[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    wheels = []
    for v in versions:
        spec = f"{package_for(v)}=={v}"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.11",
               "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64", "-d", str(dest), spec]
        print("+", " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True)
        pattern = f"{package_for(v).replace('-', '_')}-{v}-*.whl"
        found = sorted(dest.glob(pattern))
        if not found:
            raise SystemExit(f"pip download gave no wheel matching {pattern} in {dest}")
        wheels.append(found[-1])
    return wheels


def check_known(data: dict) -> List[str]:
    """The facts a correct extraction must reproduce; returns the failures."""
    failures = []
    for version, entry in data["versions"].items():
        names = set(entry["names"])
        major = int(version.split(".")[0])
        for name, in10, in11 in KNOWN_FACTS:
            want = in10 if major == 10 else in11
            if (name in names) != want:
                failures.append(f"{version}: {name} should be {'present' if want else 'absent'}")
    return failures


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("wheels", nargs="*", help="binding wheels to read (default with --download: the fetched ones)")
    p.add_argument("--download", action="store_true", help=f"pip download the binding wheels into {WHEEL_DIR.name}/ first")
    p.add_argument("--versions", nargs="+", default=list(DEFAULT_VERSIONS), help="versions for --download")
    p.add_argument("-o", "--output", type=Path, default=DEFAULT_OUT, help="JSON to write (default: the committed data file)")
    p.add_argument("--check-known", action="store_true", help="only check the known facts on --output and exit")
    args = p.parse_args(argv)

    if args.check_known:
        failures = check_known(json.loads(args.output.read_text()))
        print("\n".join(failures) or f"{args.output}: all {len(KNOWN_FACTS)} known facts hold")
        return 1 if failures else 0

    wheels = [Path(w) for pattern in args.wheels for w in (glob.glob(pattern) or [pattern])]
    if args.download:
        wheels += download(args.versions, WHEEL_DIR)
    if not wheels:
        p.error("give wheels, or --download")
    result = {
        "description": "TensorRT Python API names (Class, Class.member, module-level name) per version, read from the "
                       "compiled bindings by tools/trt_api_names.py without loading them. Over-approximate: argument "
                       "names count as members.",
        "generated": _dt.date.today().isoformat(),
        "versions": {},
    }
    for wheel in wheels:
        version, names = names_from_wheel(wheel)
        result["versions"][version] = {
            "wheel": wheel.name,
            "wheel_sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
            "count": len(names),
            "names": names,
        }
        print(f"{wheel.name}: TensorRT {version}, {len(names)} names", file=sys.stderr)
    failures = check_known(result)
    if failures:
        print("extraction does not reproduce the known facts:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(f".{args.output.name}.tmp")
    tmp.write_text(json.dumps(result, indent=0, sort_keys=False) + "\n")
    tmp.replace(args.output)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
