# fcnseg Dask worker (and scheduler) image with CUDA torch.
#
# Build, from the repository root:
#   docker build -f deploy/worker.Dockerfile -t fcnseg-worker:latest .
# Another CUDA build of torch (the host's NVIDIA driver must support it):
#   docker build -f deploy/worker.Dockerfile --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130 -t fcnseg-worker:latest .
# Run one GPU worker against a scheduler (NVIDIA Container Toolkit on the host):
#   docker run --rm --gpus 1 -e DASK_SCHEDULER_ADDRESS=tcp://SCHEDULER:8786 fcnseg-worker:latest
# Kubernetes (deploy/clusters/kubernetes.yaml) passes its own `args`: `dask worker ...` or `dask scheduler ...`.
#
# Same pins as a local install: everything goes through constraints.txt (torch==2.13.0 there).
# CUDA comes with the torch wheels (nvidia-* packages), GDAL with the rasterio and pyogrio wheels:
# a plain Python base image suffices, the host only provides the driver.
FROM python:3.11-slim-bookworm

# PyTorch's index of CUDA builds. An extra index: a build of the pinned version there
# (2.13.0+cuXXX) is preferred; without one, pip takes the PyPI wheel, itself a CUDA build on Linux.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# tini as PID 1: signals reach `dask worker`, and the nanny's exited children are reaped.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# torch first, in its own layer: it is the big one (several GB) and changes only with the pin.
COPY constraints.txt ./
RUN pip install torch -c constraints.txt --extra-index-url "${TORCH_INDEX_URL}"

# The project itself, with the same constraints (torch is already satisfied).
COPY pyproject.toml README.md ./
COPY fcnseg ./fcnseg
COPY models ./models
COPY pipeline ./pipeline
COPY flows ./flows
RUN pip install . -c constraints.txt \
    && python -c "import torch, rasterio, distributed, fcnseg.pipeline.segment.worker; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

RUN useradd --create-home --uid 1000 fcnseg
USER fcnseg
WORKDIR /home/fcnseg

ENTRYPOINT ["tini", "--"]
# One thread per worker, one GPU advertised: the scheduler runs one inference task at a time per
# worker (tasks ask for resources={"GPU": 1}). The scheduler address comes from DASK_SCHEDULER_ADDRESS.
CMD ["dask", "worker", "--nthreads", "1", "--resources", "GPU=1"]
