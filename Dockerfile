# The echoprime image for Ray clusters (KubeRay pods, `ray up` Docker nodes): CUDA runtime,
# Python 3.11, the project installed from pyproject.toml, run as a non-root user.
#
#   docker build -t registry.example.com/echoprime:0.1.0 .
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 ...  # drivers < 580
#
# torch's PyPI wheels bring their own CUDA 13 libraries (nvidia-* wheels), which need an NVIDIA
# driver >= 580 on the host; TORCH_INDEX_URL picks a wheel built for an older CUDA instead.
# No secrets are baked in: S3 credentials and the API key arrive at run time (Kubernetes
# Secrets, instance profiles; docs/operations.md). No HEALTHCHECK: KubeRay and Ray Serve probe
# the Ray processes themselves.
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-runtime-ubuntu22.04
FROM ${CUDA_IMAGE}

ARG TORCH_INDEX_URL=""
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    RAY_USAGE_STATS_ENABLED=0

# bash: KubeRay starts Ray with `bash -lc`; wget: KubeRay's probes; rsync: the cluster
# launcher's file_mounts; libgomp1/libglib2.0-0: faiss and OpenCV at run time.
# Login shells (KubeRay's `bash -lc`, the launcher's `bash --login`) reset PATH from
# /etc/profile, which then reads /etc/profile.d: keep the venv first there too.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv bash wget rsync ca-certificates libgomp1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv \
    && echo 'export PATH=/opt/venv/bin:$PATH' > /etc/profile.d/echoprime-venv.sh \
    && useradd --create-home --uid 1000 --user-group --shell /bin/bash echoprime

WORKDIR /app

# Dependencies first, from pyproject.toml alone (empty packages stand in for the code), so that
# a code change rebuilds only the last layers and not torch, Ray and friends.
COPY pyproject.toml README.md ./
RUN mkdir -p echoprime ray_jobs serve \
    && touch echoprime/__init__.py ray_jobs/__init__.py serve/__init__.py \
    && pip install --upgrade pip setuptools wheel \
    && pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} . \
    && pip uninstall -y echoprime \
    && rm -rf echoprime ray_jobs serve

# The checkout (.dockerignore keeps out .venv, outputs, caches and .git) and the project itself.
# /app stays writable by the user: the launcher's file_mounts sync configs/ into it.
COPY --chown=1000:1000 . .
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info \
    && python -c "import echoprime, ray_jobs, serve, ray, torch; print('echoprime image: ray', ray.__version__, 'torch', torch.__version__)"

USER 1000:1000
ENV HOME=/home/echoprime
CMD ["bash"]
