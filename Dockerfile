# syntax=docker/dockerfile:1
# bids_lesionchange BIDS-App image: CPU TensorFlow, HD-BET weights and the default model baked in,
# no network needed at run time. Build:  docker build -t bids_lesionchange:0.1.0 .
# Singularity/Apptainer:  apptainer build bids_lesionchange.sif docker-daemon://bids_lesionchange:0.1.0

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY .ci/constraints.txt /src/.ci/constraints.txt
# torch first and pinned to the CPU build (an unpinned torch pulls GBs of CUDA wheels)
RUN pip install -c .ci/constraints.txt torch==2.13.0
COPY setup.cfg pyproject.toml README.md /src/
COPY bids_lesionchange /src/bids_lesionchange
RUN pip install -c .ci/constraints.txt '.[hdbet]' \
 && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} + \
 && find /opt/venv -name 'tests' -path '*site-packages/*/tests' -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="bids_lesionchange" \
      org.opencontainers.image.description="Self-supervised detection of new and enlarging MS lesions between two FLAIR sessions (BIDS-App)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/bids-lesionchange/bids_lesionchange"
COPY --from=builder /opt/venv /opt/venv
RUN useradd --create-home --uid 1000 --shell /bin/bash bidsapp \
 && mkdir -p /data /out /work && chown bidsapp:bidsapp /data /out /work
ENV PATH=/opt/venv/bin:$PATH \
    TF_ENABLE_ONEDNN_OPTS=1 TF_CPP_MIN_LOG_LEVEL=2 \
    MPLCONFIGDIR=/tmp/matplotlib HOME=/home/bidsapp \
    BIDS_LESIONCHANGE_CONTAINER=bids_lesionchange:${VERSION} \
    PYTHONDONTWRITEBYTECODE=1
USER bidsapp
WORKDIR /home/bidsapp
ENTRYPOINT ["bids_lesionchange"]
CMD ["--help"]
