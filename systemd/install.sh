#!/usr/bin/env bash
# Install, upgrade, roll back or remove maskgate as a systemd service on Raspberry Pi OS
# (Bookworm or Trixie, 64-bit). Idempotent: a second run with the same inputs changes nothing.
#
#   sudo systemd/install.sh                      # install or upgrade from this checkout (needs internet)
#   sudo systemd/install.sh --wheelhouse DIR     # offline: maskgate + dependency wheels in DIR
#   sudo systemd/install.sh --rollback           # switch back to the previous version and restart
#   sudo systemd/install.sh --uninstall [--purge]
#   systemd/install.sh --root DIR ...            # write into an image tree (no apt, no service start)
#
# Layout it creates (each path is checked by tests/test_install.py):
#   /opt/maskgate/venvs/<version>-<hash>/   one virtual environment per installed version
#   /opt/maskgate/current -> venvs/...      what the service runs; previous -> the one before
#   /opt/maskgate/constraints.txt           pins numpy to the OS's python3-numpy (see below)
#   /opt/maskgate/share/                    INSTALL.md, hardware notes
#   /etc/maskgate/maskgate.toml             your config: created once, never overwritten
#   /etc/maskgate/maskgate.example.toml     the current version's documented defaults (refreshed)
#   /etc/systemd/system/maskgate.service    (+ maskgate.service.d/coral-usb.conf with --coral, and
#                                           restart-mode.conf where systemd is 254 or newer)
#   /etc/systemd/system/maskgate-failsafe.service  started by systemd only when it gives up on the gate
#   /var/lib/maskgate/models/               the YuNet detector (the service's $STATE_DIRECTORY)
#   user and group maskgate, member of gpio and video (plugdev with --coral)
#
# Why numpy is pinned: Raspberry Pi OS builds python3-picamera2 and simplejpeg against its own
# numpy (1.24 on Bookworm). The venv sees them through --system-site-packages, so a numpy 2 that
# pip put into the venv would shadow the system one and picamera2 fails with "numpy.dtype size
# changed". The installer pins numpy to the system version, and on numpy 1.x also caps
# opencv-python-headless below 4.12 (4.12+ needs numpy 2). The OS's python3-opencv is not used: on
# Bookworm it is 4.6, older than the 4.8 the YuNet 2023mar model needs. See
# systemd/pi-dependency-resolution.md for what pip resolves on each OS.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SOURCE=$(cd "$SCRIPT_DIR/.." && pwd)
PREFIX=/opt/maskgate
ETC=/etc/maskgate
STATE=/var/lib/maskgate
UNIT_DIR=/etc/systemd/system
UNIT=maskgate.service
FAILSAFE_UNIT=maskgate-failsafe.service
USER_NAME=maskgate
YUNET_FILE=face_detection_yunet_2023mar.onnx
APT_PACKAGES=(python3-venv python3-pip python3-numpy python3-picamera2 python3-lgpio python3-gpiozero)

ROOT=/
ACTION=install
WHEELHOUSE=
PYTHON=/usr/bin/python3
DO_APT=1
DO_VENV=1
DO_FETCH=1
DO_ENABLE=1
NO_DEPS=0
CORAL=0
PURGE=0
DETECTOR_URL=

usage() {
  cat <<EOF
usage: install.sh [options]
  --root DIR          install into the tree at DIR instead of / (implies --no-apt; nothing is started)
  --wheelhouse DIR    install offline from wheels in DIR (maskgate-*.whl and its dependencies)
  --source DIR        maskgate source tree to install (default: $SOURCE)
  --python PATH       interpreter for the venv (default: $PYTHON)
  --no-apt            do not install apt packages
  --no-venv           do not create a venv or run pip (config, user, unit only)
  --no-deps           pip installs maskgate alone; its dependencies must already be importable
  --no-fetch          do not download the face detector now (the service fetches it once on start)
  --detector-url URL  where to fetch the detector from (e.g. file:///media/usb/$YUNET_FILE)
  --no-enable         do not enable the service
  --coral             also install the Coral USB drop-in and add the user to plugdev
  --rollback          switch back to the previous installed version
  --uninstall         remove the service and /opt/maskgate (keeps config, state and user)
  --purge             with --uninstall: also remove $ETC, $STATE and the user
  -h, --help          this text
EOF
}

say() { printf 'maskgate-install: %s\n' "$*"; }
die() { printf 'maskgate-install: error: %s\n' "$*" >&2; exit 1; }

while (($#)); do
  case $1 in
    --root) ROOT=${2:?--root needs a directory}; shift ;;
    --wheelhouse) WHEELHOUSE=${2:?--wheelhouse needs a directory}; shift ;;
    --source) SOURCE=${2:?--source needs a directory}; shift ;;
    --python) PYTHON=${2:?--python needs a path}; shift ;;
    --detector-url) DETECTOR_URL=${2:?--detector-url needs a URL}; shift ;;
    --no-apt) DO_APT=0 ;;
    --no-venv) DO_VENV=0 ;;
    --no-deps) NO_DEPS=1 ;;
    --no-fetch) DO_FETCH=0 ;;
    --no-enable) DO_ENABLE=0 ;;
    --coral) CORAL=1 ;;
    --rollback) ACTION=rollback ;;
    --uninstall) ACTION=uninstall ;;
    --purge) PURGE=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
  shift
done

[[ $(id -u) -eq 0 ]] || die "run as root (sudo $0 ...)"
[[ -d $ROOT ]] || die "--root $ROOT: not a directory"
ROOT=$(cd "$ROOT" && pwd)
R=${ROOT%/}  # prefix for every path we touch; empty for the running system
LIVE=0
[[ -z $R ]] && LIVE=1
((LIVE)) || DO_APT=0
# RUNNING: systemd manages this system right now. Not in a chroot or container (an image being built,
# an emulated Pi): there units are written and enabled on disk, and nothing is reloaded or started.
RUNNING=0
((LIVE)) && [[ -d /run/systemd/system ]] && RUNNING=1

# --- small helpers ------------------------------------------------------------------------------

# uid/gid of a user or group inside the target tree (the host may not know them under --root).
id_of() { awk -F: -v n="$2" '$1 == n { print $3 }' "$R/etc/$1"; }

# ensure_dir PATH MODE OWNER GROUP: create or fix a directory; prints only when something changes.
ensure_dir() {
  local path=$R$1 mode=$2 uid gid
  uid=$(resolve_owner passwd "$3")
  gid=$(resolve_owner group "$4")
  if [[ ! -d $path ]]; then
    mkdir -p "$path"
    say "created $1"
  fi
  set_attrs "$path" "$mode" "$uid" "$gid"
}

resolve_owner() {
  local n
  if [[ $2 == root ]]; then echo 0; return; fi
  n=$(id_of "$1" "$2")
  [[ -n $n ]] || die "$2 not found in $R/etc/$1"
  echo "$n"
}

set_attrs() {
  local path=$1 mode=$2 uid=$3 gid=$4
  [[ $(stat -c %a "$path") == "${mode#0}" ]] || chmod "$mode" "$path"
  [[ $(stat -c %u:%g "$path") == "$uid:$gid" ]] || chown "$uid:$gid" "$path"
}

# put_file SRC DEST MODE OWNER GROUP: copy when the content differs, then fix mode and owner.
put_file() {
  local src=$1 dest=$R$2 mode=$3 uid gid
  uid=$(resolve_owner passwd "$4")
  gid=$(resolve_owner group "$5")
  if ! cmp -s "$src" "$dest"; then
    local tmp
    tmp=$(mktemp "$dest.XXXXXX")
    cat "$src" >"$tmp"
    set_attrs "$tmp" "$mode" "$uid" "$gid"
    mv -f "$tmp" "$dest"
    say "wrote $2"
  fi
  set_attrs "$dest" "$mode" "$uid" "$gid"
}

# put_link TARGET LINK: point a symlink at TARGET atomically (no-op when it already does).
put_link() {
  [[ -L $R$2 && $(readlink "$R$2") == "$1" ]] && return 0
  ln -sfn "$1" "$R$2.new"
  mv -T "$R$2.new" "$R$2"
  say "$2 -> $1"
}

ensure_group() {
  grep -q "^$1:" "$R/etc/group" && return 0
  groupadd --root "$ROOT" --system "$1"
  say "created group $1"
}

ensure_user() {
  local g groups=(gpio video)
  ((CORAL)) && groups+=(plugdev)
  for g in "${groups[@]}"; do ensure_group "$g"; done
  if ! grep -q "^$USER_NAME:" "$R/etc/passwd"; then
    useradd --root "$ROOT" --system --user-group --no-create-home --home-dir "$STATE" \
      --shell /usr/sbin/nologin --comment "maskgate door gate" \
      --groups "$(IFS=,; echo "${groups[*]}")" "$USER_NAME"
    say "created user $USER_NAME (groups: ${groups[*]})"
    return 0
  fi
  for g in "${groups[@]}"; do
    if ! awk -F: -v g="$g" -v u="$USER_NAME" '$1 == g { n = split($4, m, ","); for (i = 1; i <= n; i++) if (m[i] == u) f = 1 } END { exit !f }' "$R/etc/group"; then
      usermod --root "$ROOT" --append --groups "$g" "$USER_NAME"
      say "added $USER_NAME to $g"
    fi
  done
}

systemctl_() {
  if ((RUNNING)); then systemctl "$@"; else systemctl --root="$ROOT" "$@"; fi
}

service_active() { ((RUNNING)) && systemctl is-active --quiet "$UNIT"; }

restart_if_running() {
  if service_active; then
    systemctl restart "$UNIT"
    say "restarted $UNIT"
  fi
}

# What the running service is made of: the venv it runs, its units and drop-ins, the config and the
# detector. An install that changes none of them leaves a running gate alone (a restart is a few
# seconds of a locked door).
service_inputs() {
  {
    readlink "$R$PREFIX/current" 2>/dev/null || true
    cat "$R$UNIT_DIR/$UNIT" "$R$UNIT_DIR/$FAILSAFE_UNIT" "$R$UNIT_DIR/$UNIT.d/"*.conf "$R$ETC/maskgate.toml" \
      "$R$STATE/models/$YUNET_FILE" 2>/dev/null || true
  } | sha256sum
}

# --- steps --------------------------------------------------------------------------------------

install_apt() {
  local pkg available=()
  for pkg in "${APT_PACKAGES[@]}"; do
    if apt-cache show "$pkg" >/dev/null 2>&1; then
      available+=("$pkg")
    else
      say "apt package $pkg is not in this OS's archive (not Raspberry Pi OS?); skipped"
    fi
  done
  say "apt-get install ${available[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${available[@]}"
}

# The release id names the venv: the package version plus a hash of what is being installed, so
# the same input maps to the same venv (a second run reuses it) and a change gets a new one.
release_id() {
  local version hash wheel
  if [[ -n $WHEELHOUSE ]]; then
    wheel=$(the_wheel)
    version=$(basename "$wheel" | cut -d- -f2)
    hash=$(sha256sum "$wheel" | cut -c1-12)
  else
    [[ -f $SOURCE/pyproject.toml ]] || die "$SOURCE is not a maskgate source tree (no pyproject.toml)"
    version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$SOURCE/pyproject.toml" | head -n1)
    hash=$(cd "$SOURCE" && find pyproject.toml edge convert -type f ! -name '*.pyc' ! -path '*/__pycache__/*' \
      -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
  fi
  echo "$version-$hash"
}

the_wheel() {
  local wheels=()
  shopt -s nullglob
  wheels=("$WHEELHOUSE"/maskgate-*.whl)
  shopt -u nullglob
  ((${#wheels[@]} == 1)) || die "--wheelhouse $WHEELHOUSE: expected exactly one maskgate-*.whl, found ${#wheels[@]}"
  echo "${wheels[0]}"
}

# numpy pin: the version the OS ships, read from the interpreter the venv is built on.
write_constraints() {
  local tmp numpy
  tmp=$(mktemp)
  numpy=$("$PYTHON" -c 'import numpy; print(numpy.__version__)' 2>/dev/null || true)
  {
    echo "# Written by install.sh: keep pip from shadowing the OS's numpy (picamera2 is built against it)."
    if [[ -n $numpy ]]; then
      echo "numpy==$numpy"
      [[ $numpy == 1.* ]] && echo "opencv-python-headless<4.12"
    else
      echo "# no system numpy found for $PYTHON: pip chooses freely"
    fi
  } >"$tmp"
  put_file "$tmp" "$PREFIX/constraints.txt" 0644 root root
  rm -f "$tmp"
}

install_venv() {
  local id rel pip_args=() target
  [[ -x $PYTHON ]] || die "--python $PYTHON: not an executable"
  id=$(release_id)
  rel=$PREFIX/venvs/$id
  ensure_dir "$PREFIX/venvs" 0755 root root
  write_constraints
  if [[ ! -f $R$rel/.maskgate-release ]]; then
    rm -rf "$R$rel"  # a half-built venv from an interrupted run
    say "creating venv $rel (with --system-site-packages)"
    "$PYTHON" -m venv --system-site-packages "$R$rel"
    pip_args=(--no-input --disable-pip-version-check --quiet -c "$R$PREFIX/constraints.txt")
    ((NO_DEPS)) && pip_args+=(--no-deps)
    if [[ -n $WHEELHOUSE ]]; then
      pip_args+=(--no-index --find-links "$WHEELHOUSE")
      target=$(the_wheel)
    else
      target=$SOURCE
    fi
    say "pip install ${target##*/}"
    "$R$rel/bin/python" -m pip install "${pip_args[@]}" "$target"
    if [[ -n $R ]]; then
      # Built under DIR: make the scripts' paths those of the installed system, and drop the
      # bytecode pip compiled (it records the DIR paths; Python recompiles in memory).
      grep -rlIF -- "$R$rel" "$R$rel/bin" "$R$rel/pyvenv.cfg" | while IFS= read -r f; do
        sed -i "s|$R$rel|$rel|g" "$f"
      done
      find "$R$rel" -type d -name __pycache__ -prune -exec rm -rf {} +
    fi
    echo "$id" >"$R$rel/.maskgate-release"
  fi
  if [[ -L $R$PREFIX/current && $(readlink "$R$PREFIX/current") != "venvs/$id" ]]; then
    put_link "$(readlink "$R$PREFIX/current")" "$PREFIX/previous"
  fi
  put_link "venvs/$id" "$PREFIX/current"
  prune_venvs
}

# Keep exactly the venvs current and previous point to.
prune_venvs() {
  local d keep_cur keep_prev
  keep_cur=$(readlink "$R$PREFIX/current" 2>/dev/null || true)
  keep_prev=$(readlink "$R$PREFIX/previous" 2>/dev/null || true)
  for d in "$R$PREFIX"/venvs/*; do
    [[ -d $d ]] || continue
    case "venvs/${d##*/}" in
      "$keep_cur" | "$keep_prev") ;;
      *) rm -rf "$d"; say "removed old version ${d##*/}" ;;
    esac
  done
}

example_config() {
  local f
  if [[ -L $R$PREFIX/current ]]; then
    for f in "$R$PREFIX"/current/lib/python3*/site-packages/maskgate/data/maskgate.example.toml; do
      [[ -f $f ]] && { echo "$f"; return 0; }
    done
  fi
  f=$SOURCE/edge/maskgate/data/maskgate.example.toml
  [[ -f $f ]] || die "example config not found ($f, nor in the installed package); is this a complete maskgate release?"
  echo "$f"
}

install_config() {
  local example
  example=$(example_config)
  ensure_dir "$ETC" 0750 root "$USER_NAME"
  put_file "$example" "$ETC/maskgate.example.toml" 0640 root "$USER_NAME"
  if [[ -e $R$ETC/maskgate.toml ]]; then
    cmp -s "$example" "$R$ETC/maskgate.toml" ||
      say "kept your $ETC/maskgate.toml (compare with $ETC/maskgate.example.toml for new keys)"
  else
    put_file "$example" "$ETC/maskgate.toml" 0640 root "$USER_NAME"
  fi
}

install_state() {
  ensure_dir "$STATE" 0750 "$USER_NAME" "$USER_NAME"
  ensure_dir "$STATE/models" 0750 "$USER_NAME" "$USER_NAME"
}

fetch_model() {
  local dest=$STATE/models/$YUNET_FILE url_args=()
  [[ -f $R$dest ]] && return 0
  [[ -x $R$PREFIX/current/bin/python ]] || die "cannot fetch the detector without a venv (use --no-fetch)"
  [[ -n $DETECTOR_URL ]] && url_args=(--url "$DETECTOR_URL")
  "$R$PREFIX/current/bin/python" -m maskgate models fetch "${url_args[@]}" --dest "$R$dest"
  set_attrs "$R$dest" 0640 "$(id_of passwd "$USER_NAME")" "$(id_of group "$USER_NAME")"
}

# The target's systemd version: the running one's, or (--root) read off the name of the shared library
# in the tree (libsystemd-shared-257.so); 0 when there is none.
systemd_version() {
  local lib
  if ((LIVE)) && command -v systemctl >/dev/null; then
    systemctl --version | awk 'NR == 1 { print $2 + 0; exit }'
    return
  fi
  for lib in "$R"/usr/lib/systemd/libsystemd-shared-*.so "$R"/usr/lib/*/systemd/libsystemd-shared-*.so; do
    [[ -e $lib ]] || continue
    lib=${lib##*/libsystemd-shared-}
    echo "${lib%%[!0-9]*}"
    return
  done
  echo 0
}

install_unit() {
  local restart_mode=$UNIT_DIR/$UNIT.d/restart-mode.conf
  ensure_dir "$UNIT_DIR" 0755 root root
  put_file "$SCRIPT_DIR/$UNIT" "$UNIT_DIR/$UNIT" 0644 root root
  put_file "$SCRIPT_DIR/$FAILSAFE_UNIT" "$UNIT_DIR/$FAILSAFE_UNIT" 0644 root root
  # systemd 254+ starts OnFailure= (the fail-safe) at every automatic restart unless RestartMode=direct;
  # older versions do not know the key (see the drop-in)
  if (($(systemd_version) >= 254)); then
    ensure_dir "$UNIT_DIR/$UNIT.d" 0755 root root
    put_file "$SCRIPT_DIR/$UNIT.d/restart-mode.conf" "$restart_mode" 0644 root root
  elif [[ -e $R$restart_mode ]]; then
    rm -f "$R$restart_mode"
    say "removed $restart_mode (systemd $(systemd_version) does not know RestartMode=)"
  fi
  if ((CORAL)); then
    ensure_dir "$UNIT_DIR/$UNIT.d" 0755 root root
    put_file "$SCRIPT_DIR/$UNIT.d/coral-usb.conf" "$UNIT_DIR/$UNIT.d/coral-usb.conf" 0644 root root
  fi
  ensure_dir "$PREFIX" 0755 root root
  ensure_dir "$PREFIX/share" 0755 root root
  put_file "$SCRIPT_DIR/INSTALL.md" "$PREFIX/share/INSTALL.md" 0644 root root
  if [[ -f $SOURCE/hardware/README.md ]]; then
    put_file "$SOURCE/hardware/README.md" "$PREFIX/share/hardware.md" 0644 root root
  fi
  ((RUNNING)) && systemctl daemon-reload
  if ((DO_ENABLE)); then
    systemctl_ is-enabled --quiet "$UNIT" 2>/dev/null || systemctl_ enable "$UNIT"
  fi
}

do_install() {
  local before
  before=$(service_inputs)
  ((DO_APT)) && install_apt
  ensure_user
  ensure_dir "$PREFIX" 0755 root root
  if ((DO_VENV)); then install_venv; else say "skipped venv and pip (--no-venv)"; fi
  install_config
  install_state
  if ((DO_FETCH)); then fetch_model; else say "skipped detector download (--no-fetch)"; fi
  install_unit
  if ((LIVE)); then
    if [[ $(service_inputs) != "$before" ]]; then
      restart_if_running
    elif service_active; then
      say "$UNIT left running: nothing it uses changed"
    fi
    service_active || say "ready: edit $ETC/maskgate.toml, then: sudo systemctl start $UNIT"
  fi
}

do_rollback() {
  local cur prev
  cur=$(readlink "$R$PREFIX/current" 2>/dev/null) || die "nothing installed at $PREFIX"
  prev=$(readlink "$R$PREFIX/previous" 2>/dev/null) || die "no previous version to roll back to"
  [[ -f $R$PREFIX/$prev/.maskgate-release ]] || die "$PREFIX/$prev is incomplete; cannot roll back"
  put_link "$prev" "$PREFIX/current"
  put_link "$cur" "$PREFIX/previous"
  say "rolled back to ${prev#venvs/} (run --rollback again to undo)"
  restart_if_running
}

do_uninstall() {
  if [[ -e $R$UNIT_DIR/$UNIT ]]; then
    if ((RUNNING)); then systemctl disable --now "$UNIT" || true; else systemctl_ disable "$UNIT" || true; fi
  fi
  if ((RUNNING)) && systemctl is-active --quiet "$FAILSAFE_UNIT"; then systemctl stop "$FAILSAFE_UNIT" || true; fi
  rm -rf "$R${UNIT_DIR:?}/${UNIT:?}" "$R$UNIT_DIR/$UNIT.d" "$R$UNIT_DIR/${FAILSAFE_UNIT:?}" "$R${PREFIX:?}"
  ((RUNNING)) && systemctl daemon-reload
  say "removed the service and $PREFIX"
  if ((PURGE)); then
    rm -rf "$R$ETC" "$R$STATE"
    if grep -q "^$USER_NAME:" "$R/etc/passwd"; then userdel --root "$ROOT" "$USER_NAME"; fi
    say "purged $ETC, $STATE and the $USER_NAME user"
  else
    say "kept $ETC, $STATE and the $USER_NAME user (--purge removes them)"
  fi
}

case $ACTION in
  install) do_install ;;
  rollback) do_rollback ;;
  uninstall) do_uninstall ;;
esac
