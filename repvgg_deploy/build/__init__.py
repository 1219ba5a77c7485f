"""Stage 6 of the pipeline: TensorRT engines from ONNX (TensorRT 10 and 11, strongly typed).

    from repvgg_deploy.build import BuildConfig, build_engine, check_engine_compat

Importing this package does not import TensorRT; :func:`build_engine` does, when it needs it.
"""
from .builder import (DEFAULT_DYNAMIC_BATCH, BuildConfig, OnnxParseError, OnnxPrecheck, build_engine, is_repvgg_onnx,
                      onnx_precision, parse_batch, parse_workspace, precheck_onnx)
from .metadata import (EngineCompatError, EngineMeta, check_engine_compat, check_engine_file, meta_path,
                       read_engine_meta, write_engine_meta)

__all__ = [
    "BuildConfig", "build_engine", "precheck_onnx", "OnnxPrecheck", "parse_batch", "parse_workspace", "onnx_precision",
    "is_repvgg_onnx",
    "OnnxParseError", "DEFAULT_DYNAMIC_BATCH", "EngineMeta", "EngineCompatError", "check_engine_compat",
    "check_engine_file", "meta_path", "read_engine_meta", "write_engine_meta",
]
