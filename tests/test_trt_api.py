"""The project's TensorRT calls exist in TensorRT 10 and 11: a static check, no TensorRT needed.

The names of each version come from repvgg_deploy/build/trt_api_names.json, read out of the
binding wheels by tools/trt_api_names.py (refresh: ``tools/trt_api_names.py --download``).
"""
import importlib.util
import json
import textwrap
from pathlib import Path

import pytest

from repvgg_deploy.build.api_check import DATA_FILE, check_paths, check_source, collect_uses, load_api_names

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("trt_api_names", ROOT / "tools" / "trt_api_names.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def names():
    return load_api_names()


def test_data_file_covers_10_and_11(names):
    majors = {v.split(".")[0] for v in names}
    assert {"10", "11"} <= majors
    assert all(len(s) > 1000 for s in names.values())


def test_data_file_reproduces_known_facts():
    tool = _tool()
    failures = tool.check_known(json.loads(DATA_FILE.read_text()))
    assert not failures, failures
    names = load_api_names()
    v10 = [v for v in names if v.startswith("10.")]
    v11 = [v for v in names if v.startswith("11.")]
    for v in v10:
        assert "BuilderFlag.FP16" in names[v] and "IBuilderConfig.int8_calibrator" in names[v]
    for v in v11:
        assert "BuilderFlag.FP16" not in names[v] and "IBuilderConfig.int8_calibrator" not in names[v]
        assert "BuilderFlag.INT8" not in names[v] and "Builder.platform_has_fast_fp16" not in names[v]
    for v in v10 + v11:
        assert "NetworkDefinitionCreationFlag.STRONGLY_TYPED" in names[v]
        assert "IExecutionContext.execute_async_v3" in names[v]
        assert "IExecutionContext.execute_async_v2" not in names[v]
        assert "Builder.build_engine" not in names[v]


def test_project_code_uses_only_existing_names(names):
    violations, uses = check_paths([ROOT / "repvgg_deploy", ROOT / "tools", ROOT / "tests"], names, root=ROOT)
    assert not violations, "\n".join(map(str, violations))
    used = {u.name for u in uses}
    # The checker must actually see the build and runtime calls (not silently scan nothing).
    for name in ("NetworkDefinitionCreationFlag.STRONGLY_TYPED", "Builder.build_serialized_network",
                 "IBuilderConfig.set_memory_pool_limit", "IBuilderConfig.builder_optimization_level",
                 "IBuilderConfig.set_timing_cache", "IOptimizationProfile.set_shape", "OnnxParser.parse",
                 "ParserError.node_name", "Runtime.deserialize_cuda_engine", "ICudaEngine.get_tensor_name",
                 "IExecutionContext.set_tensor_address", "IExecutionContext.execute_async_v3",
                 "EngineInspector.get_engine_information", "LayerInformationFormat.JSON"):
        assert name in used, name
    assert len(uses) >= 60
    # Version-specific code is seen as such.
    majors = {(u.name, u.majors) for u in uses}
    assert ("ICudaEngine.device_memory_size", (10,)) in majors
    assert ("ICudaEngine.device_memory_size_v2", (11,)) in majors
    # No weakly typed precision flags or calibrators anywhere in the project.
    assert not any(u.name.startswith(("BuilderFlag.FP16", "BuilderFlag.INT8", "IInt8")) for u in uses)


SNIPPET_HEADER = """
import tensorrt as trt
from repvgg_deploy.backend.trt.env import trt_major
TRT_MAJOR = trt_major(trt)
"""


def _check(body: str, names):
    return check_source(SNIPPET_HEADER + textwrap.dedent(body), "snippet.py", names)


def _missing(violations):
    return {(v.use.name, v.missing_in) for v in violations}


def test_checker_fails_fp16_flag_on_the_11_path(names):
    v = _check("""
        def build(config):
            if TRT_MAJOR >= 11:
                config.set_flag(trt.BuilderFlag.FP16)
    """, names)
    assert len(v) == 1 and v[0].use.name == "BuilderFlag.FP16" and v[0].use.majors == (11,)
    assert all(m.startswith("11.") for m in v[0].missing_in)
    assert "BuilderFlag.FP16" in str(v[0]) and "11." in str(v[0])


def test_checker_accepts_fp16_flag_on_the_10_path_only(names):
    assert not _check("""
        def build(config):
            if TRT_MAJOR < 11:
                config.set_flag(trt.BuilderFlag.FP16)
            else:
                pass
    """, names)
    # ... but not in the else branch, nor unguarded, nor with the comparison written the other way
    for body in ("""
        def build(config):
            if TRT_MAJOR < 11:
                pass
            else:
                config.set_flag(trt.BuilderFlag.FP16)
    """, """
        def build(config):
            config.set_flag(trt.BuilderFlag.FP16)
    """, """
        def build(config):
            if 11 <= trt_major(trt):
                config.set_flag(trt.BuilderFlag.FP16)
    """, """
        def build(config):
            flag = trt.BuilderFlag.INT8 if TRT_MAJOR >= 11 else None
    """):
        v = _check(body, names)
        assert v and all(m.startswith("11.") for x in v for m in x.missing_in), body


def test_checker_pragma_marks_a_function_for_one_major(names):
    assert not _check("""
        def weak_fp16(config):  # trt-only: 10
            config.set_flag(trt.BuilderFlag.FP16)
    """, names)
    v = _check("""
        def strong(config):  # trt-only: 11
            config.set_flag(trt.BuilderFlag.FP16)
    """, names)
    assert v and v[0].use.majors == (11,)


def test_checker_tracks_object_types(names):
    v = _check("""
        def build(logger, calibrator):
            builder = trt.Builder(logger)
            config = builder.create_builder_config()
            config.int8_calibrator = calibrator
            engine = trt.Runtime(logger).deserialize_cuda_engine(b"")
            context = engine.create_execution_context()
            context.execute_async_v2([], 0)
            context.execute_async_v3(0)
    """, names)
    missing = _missing(v)
    names_missing = {n for n, _ in missing}
    assert "IBuilderConfig.int8_calibrator" in names_missing
    assert "IExecutionContext.execute_async_v2" in names_missing
    assert "IExecutionContext.execute_async_v3" not in names_missing
    v2 = next(x for x in v if x.use.name == "IExecutionContext.execute_async_v2")
    assert {m.split(".")[0] for m in v2.missing_in} == {"10", "11"}  # gone from both
    cal = next(x for x in v if x.use.name == "IBuilderConfig.int8_calibrator")
    assert all(m.startswith("11.") for m in cal.missing_in)


def test_checker_uses_annotations_and_self_attributes(names):
    v = _check("""
        class Runner:
            def __init__(self, loaded):
                self.engine: "trt.ICudaEngine" = loaded.engine
                self.context = self.engine.create_execution_context()

            def run(self):
                self.context.execute_v3()
                return self.engine.device_memory_size

        def describe(engine: "trt.ICudaEngine"):
            if TRT_MAJOR < 11:
                return engine.device_memory_size
            return engine.device_memory_size_v2
    """, names)
    missing = _missing(v)
    assert {n for n, _ in missing} == {"IExecutionContext.execute_v3", "ICudaEngine.device_memory_size"}
    uses = collect_uses(SNIPPET_HEADER + "x = trt.Runtime(None)\n", "s.py", names=names)
    assert [u.name for u in uses] == ["Runtime"]


def test_checker_flags_a_typo_everywhere(names):
    v = _check("""
        flag = trt.NetworkDefinitionCreationFlag.STRONGLY_TYPE
    """, names)
    assert v and {m.split(".")[0] for m in v[0].missing_in} == {"10", "11"}


def test_extractor_helpers_without_wheels():
    tool = _tool()
    assert tool.pybind_owner("_ZN8pybind116class_IN8nvinfer114IBuilderConfigEJEE3defIMS2_FvvEJEEERS3_PKcOT_DpRKT0_") \
        == ("class", "nvinfer1::IBuilderConfig")
    assert tool.pybind_owner("_ZN8pybind115enum_IN8nvinfer111BuilderFlagEEC2IJPKcEEERKNS_6handleES5_DpRKT_") \
        == ("enum", "nvinfer1::BuilderFlag")
    assert tool.pybind_owner("_ZN8pybind116class_IN8nvinfer15v_1_014IErrorRecorderEJEE3defEv") \
        == ("class", "nvinfer1::IErrorRecorder")
    assert tool.pybind_owner("_ZN8tensorrt8bindCoreERN8pybind117module_E") is None
    init = tool.scan_init("from .tensorrt import *\n__version__ = '11.4.0.106'\ndef volume(x):\n    pass\n"
                          "Logger.Severity = ILogger.Severity\n"
                          "for attr, value in ILogger.Severity.__members__.items():\n    setattr(Logger, attr, value)\n")
    assert {"__version__", "volume"} <= init[""] and "Severity" in init["Logger"]


def _local_wheels():
    return sorted((ROOT / ".whl").glob("tensorrt_cu1*_bindings-*.whl"))


@pytest.mark.skipif(not _local_wheels(), reason="no binding wheels in .whl/ (tools/trt_api_names.py --download fetches them)")
def test_extraction_matches_committed_data():
    tool = _tool()
    names = load_api_names()
    for wheel in _local_wheels():
        version, extracted = tool.names_from_wheel(wheel)
        if version in names:
            assert set(extracted) == names[version], version
