# repvgg-deploy with TensorRT, for NVIDIA GPUs.
#   docker build -t repvgg-deploy .
#   docker run --gpus all -v $PWD/models:/app/models -v $PWD/engines:/app/engines repvgg-deploy \
#       repvgg-trt build models/repvgg-b2.onnx --int8 --calib /data/imagenet
# Base: NVIDIA's TensorRT container, release 25.12 (Ubuntu 24.04, Python 3.12, CUDA 13.x and the
# TensorRT 10 release NVIDIA ships in that tag; the build prints the exact versions).
# PyTorch 2.14.1 (CUDA 13.0 wheel) comes from PyPI.
FROM nvcr.io/nvidia/tensorrt:25.12-py3

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

WORKDIR /app
COPY pyproject.toml Makefile README.md ./
COPY repvgg_deploy ./repvgg_deploy
COPY tools ./tools

# The README's set-up command (make setup), into /opt/venv, with the tensorrt extra; the venv sees
# the container's own TensorRT Python package through --system-site-packages.
RUN make setup VENV=/opt/venv VENV_FLAGS=--system-site-packages EXTRAS=tensorrt \
 && python -c "import tensorrt, torch; print('TensorRT', tensorrt.__version__, '| PyTorch', torch.__version__, '| CUDA', torch.version.cuda)"

RUN useradd --create-home --uid 10001 repvgg \
 && mkdir -p /app/models /app/engines \
 && chown -R repvgg:repvgg /app
USER 10001

VOLUME ["/app/models", "/app/engines"]
CMD ["repvgg-trt", "--help"]
