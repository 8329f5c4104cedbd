# syntax=docker/dockerfile:1
# bids_lesionchange BIDS-App image: CPU TensorFlow, HD-BET (CPU PyTorch) with its five folds, the
# default model and the BIDS validator inside; nothing is downloaded at run time.
#   docker build -t bids_lesionchange:0.1.0 .
# Without a Docker engine or a registry (buildah, chroot isolation, local Debian base):
#   scripts/build_container.sh            (see docs/container.md)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# The CPU build of torch: an unpinned torch pulls several GB of CUDA wheels.
ARG TORCH_VERSION=2.13.0+cpu
# pip reads these build arguments from the environment of the RUN steps below. The default finds the
# CPU torch wheel on PyTorch's index; scripts/build_container.sh instead bind-mounts a folder holding
# the wheel (PIP_FIND_LINKS) and, behind an egress proxy, its CA bundle (PIP_CERT).
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_FIND_LINKS
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY .ci/constraints.txt .ci/constraints.txt
RUN pip install --no-compile -c .ci/constraints.txt "torch==${TORCH_VERSION}"
COPY setup.cfg pyproject.toml README.md ./
COPY bids_lesionchange ./bids_lesionchange
# bids-validator-deno (pinned by the constraints) lets the container validate its input offline.
# Not needed at run time: bytecode caches, test suites, C/C++ headers, pip itself, and libclang
# (a TensorFlow requirement that no TensorFlow or Keras module imports).
RUN pip install --no-compile -c .ci/constraints.txt '.[hdbet]' bids-validator-deno \
 && pip uninstall -y libclang pip \
 && find /opt/venv -depth -type d -name __pycache__ -exec rm -rf {} + \
 && find /opt/venv/lib/python3*/site-packages -depth -type d -name tests -exec rm -rf {} + \
 && rm -rf /opt/venv/lib/python3*/site-packages/tensorflow/include \
           /opt/venv/lib/python3*/site-packages/torch/include \
 && bids_lesionchange --version

FROM ${PYTHON_IMAGE}
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="bids_lesionchange" \
      org.opencontainers.image.description="Self-supervised detection of new and enlarging MS lesions between two FLAIR sessions (BIDS-App)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/bids-lesionchange/bids_lesionchange" \
      org.opencontainers.image.documentation="https://github.com/bids-lesionchange/bids_lesionchange/blob/main/docs/container.md" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
# uid 1000 owns the home; /data, /out and /work are the conventional bind points.
RUN useradd --create-home --uid 1000 --user-group --shell /bin/bash bidsapp \
 && mkdir -p /data /out /work \
 && chown 1000:1000 /out /work
COPY --from=builder /opt/venv /opt/venv
# NIPYPE_NO_ET: no version check over the network. No bytecode is written into the read-only venv.
ENV PATH=/opt/venv/bin:$PATH \
    LANG=C.UTF-8 \
    TF_ENABLE_ONEDNN_OPTS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    NIPYPE_NO_ET=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/home/bidsapp \
    PYTHONDONTWRITEBYTECODE=1 \
    BIDS_LESIONCHANGE_CONTAINER=bids_lesionchange:${VERSION}
USER 1000:1000
WORKDIR /home/bidsapp
ENTRYPOINT ["bids_lesionchange"]
CMD ["--help"]
