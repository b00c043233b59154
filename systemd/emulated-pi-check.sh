#!/usr/bin/env bash
# Install maskgate with systemd/install.sh into an emulated 64-bit Raspberry Pi OS Bookworm, run it
# there, and compare what it decides with this machine's maskgate on the same inputs.
#
#   sudo systemd/emulated-pi-check.sh [--root DIR] [--shared DIR] [--host-maskgate PATH] [--faces N]
#
# The "Pi" is Debian 12 (bookworm) arm64, the base of Raspberry Pi OS Bookworm, with its Python 3.11
# and python3-numpy 1.24 from apt, run under qemu-user as a Cortex-A72 (a Pi 4) whose /proc/cpuinfo
# says so. install.sh runs in it as on a Pi (apt packages Debian lacks, such as python3-picamera2, are
# skipped), then the installed venv:
#   - prints the versions pip chose (numpy must be the system's 1.24: see install.sh);
#   - checks the installed config;
#   - classifies every scene photo (`maskgate classify --json`) and compares boxes, labels and scores
#     with --host-maskgate on the same photos;
#   - plays a seeded synthetic door (`maskgate demo`) of the first N faces of each class: the door's
#     actions (openings, alarms and their frames) must match the host's; other differing decision
#     lines are listed;
#   - runs the installer's self-test as the service user (`maskgate check`): GPIO fails (there is no
#     GPIO under emulation); camera (a photo), detector and classifier must pass.
# What it cannot show: speed and memory (emulated: many times slower, and qemu's own memory), the
# camera, GPIO, systemd running the service (systemd-container-check.sh does that).
#
# Needs root, network access to Debian's archive and PyPI, and about 1.5 GB in DIR. Installs
# debootstrap and qemu-user-static on this machine if missing, registers qemu for arm64 binaries
# (binfmt_misc), and reuses DIR's root on a second run. Exit status 0 only if classify and the door's
# actions matched and the self-test passed camera, detector and classifier.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
ROOT=/var/tmp/maskgate-emulated-pi
SHARED=${MASKGATE_SHARED:-$REPO/../shared}
HOST_MASKGATE=$REPO/.venv/bin/maskgate
FACES=40
MIRROR=http://deb.debian.org/debian
YUNET=face_detection_yunet_2023mar.onnx

while (($#)); do
  case $1 in
    --root) ROOT=$2; shift ;;
    --shared) SHARED=$2; shift ;;
    --host-maskgate) HOST_MASKGATE=$2; shift ;;
    --faces) FACES=$2; shift ;;
    -h | --help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
  shift
done

say() { printf 'emulated-pi: %s\n' "$*"; }
die() { printf 'emulated-pi: error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (debootstrap, chroot and binfmt need it)"
[[ -f $SHARED/models/$YUNET && -d $SHARED/data/scenes/images && -d $SHARED/data/faces ]] \
  || die "$SHARED: no models/$YUNET, data/scenes/images or data/faces (--shared DIR)"
[[ -x $HOST_MASKGATE ]] || die "$HOST_MASKGATE: no host maskgate to compare with (--host-maskgate PATH)"

# --- the emulator -------------------------------------------------------------------------------
if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null; then
  say "installing qemu-user-static and debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static debootstrap >/dev/null
fi
BINFMT=/proc/sys/fs/binfmt_misc
[[ -e $BINFMT/register ]] || mount -t binfmt_misc binfmt_misc "$BINFMT"
if [[ ! -e $BINFMT/qemu-aarch64 ]]; then
  # the F flag keeps the interpreter open, so it works inside the chroot
  cat /usr/lib/binfmt.d/qemu-aarch64.conf >"$BINFMT/register"
fi
export QEMU_CPU=cortex-a72

# --- the Pi's root ------------------------------------------------------------------------------
if [[ ! -x $ROOT/usr/bin/python3 ]]; then
  say "debootstrap bookworm arm64 into $ROOT (a few minutes)"
  debootstrap --arch arm64 --variant=minbase \
    --include=python3,python3-venv,python3-pip,python3-numpy,ca-certificates,systemd,passwd,sudo \
    bookworm "$ROOT" "$MIRROR" >/dev/null
fi
# this machine's CA bundle and resolver: pip inside behaves as pip here (proxies included)
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"

MOUNTS=()
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  local m i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    m=${MOUNTS[i]}
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}
trap cleanup EXIT
bind() { mount "$@"; MOUNTS+=("${*: -1}"); }
bind -t proc proc "$ROOT/proc"
bind --bind /dev "$ROOT/dev"
bind --bind /sys "$ROOT/sys"
# Under qemu-user a program reads the host's /proc/cpuinfo; LiteRT 2.2+ probes it for ARM cores and
# crashes on an x86 one. A Pi 4's cpuinfo (two cores listed) goes over it, as on the real board.
CPUINFO=$ROOT/tmp/cpuinfo-pi4
mkdir -p "$ROOT/tmp"
for i in 0 1; do
  printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' "$i"
done >"$CPUINFO"
printf 'Hardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B (emulated)\n' >>"$CPUINFO"
bind --bind "$CPUINFO" "$ROOT/proc/cpuinfo"

# A clean environment inside, as on a Pi, but for the CPU model qemu emulates, the CA bundle pip uses
# (this machine's, copied above) and any proxy.
inside() {
  chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 QEMU_CPU="$QEMU_CPU" PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    ${https_proxy:+https_proxy=$https_proxy} ${http_proxy:+http_proxy=$http_proxy} bash -c "$1"
}

# --- install as on a Pi -------------------------------------------------------------------------
WORK=$ROOT/tmp/maskgate-check
rm -rf "$ROOT/opt/src/maskgate" "$WORK"
mkdir -p "$ROOT/opt/src" "$WORK/scenes"
git -C "$REPO" archive HEAD --prefix=maskgate/ | tar -x -C "$ROOT/opt/src"
cp "$SHARED/models/$YUNET" "$ROOT/opt/src/$YUNET"
say "install.sh inside the emulated Pi ($(git -C "$REPO" rev-parse --short HEAD))"
inside "cd /opt/src/maskgate && bash systemd/install.sh --detector-url file:///opt/src/$YUNET" \
  | grep '^maskgate-install' || die "install.sh failed"
V=/opt/maskgate/current/bin
inside "$V/python -c 'import platform, numpy, cv2, ai_edge_litert, gpiozero, importlib.metadata as m
print(platform.machine(), platform.python_version(), \"numpy\", numpy.__version__, \"from\", numpy.__file__.rsplit(\"/\", 2)[0],
      \"opencv\", cv2.__version__, \"ai-edge-litert\", m.version(\"ai-edge-litert\"), \"gpiozero\", m.version(\"gpiozero\"))'"
inside "$V/maskgate config check /etc/maskgate/maskgate.toml"

status=0

# --- every scene photo, here and there ----------------------------------------------------------
cp "$SHARED"/data/scenes/images/* "$WORK/scenes/"
say "classifying $(find "$WORK/scenes" -type f | wc -l) scene photos inside (emulated: minutes)"
inside "cd /tmp/maskgate-check && $V/maskgate classify --json --detector-model /var/lib/maskgate/models scenes" \
  >"$WORK/pi.jsonl" 2>/dev/null
(cd "$WORK" && "$HOST_MASKGATE" classify --json --detector-model "$SHARED/models" scenes >"$WORK/host.jsonl" 2>/dev/null)
python3 - "$WORK/pi.jsonl" "$WORK/host.jsonl" <<'EOF' || status=1
# OpenCV resizes round differently on ARM and x86, so scores differ a little (up to about 0.15 where
# the second opinion is averaged in). A verdict may differ only where it is a near tie on both
# machines: a face label or no_face at a score under NEAR_TIE there and here (a box found on one
# machine only counts so too when its score is under NEAR_TIE). Anything else (a sure verdict that
# differs, a sure face whose box moves or is missing on one machine, a photo missing) fails.
import json, sys
NEAR_TIE = 0.6
pi, host = ({json.loads(l)["image"]: json.loads(l) for l in open(p)} for p in sys.argv[1:3])
faces = same = ties = 0
score = 0.0
bad = []
for name in sorted(set(pi) | set(host)):
    a = {tuple(f["box"]): f for f in pi.get(name, {}).get("faces", [])}
    b = {tuple(f["box"]): f for f in host.get(name, {}).get("faces", [])}
    if name not in pi or name not in host:
        bad.append(name)
    for box in sorted(set(a) | set(b)):
        faces += 1
        x, y = a.get(box), b.get(box)
        if x and y and x["label"] == y["label"]:
            same += 1
            score = max(score, abs(x["score"] - y["score"]))
        elif all(f is None or f["score"] < NEAR_TIE for f in (x, y)):
            ties += 1
        else:
            bad.append(f"{name} {box}")
print(f"emulated-pi: classify: {len(pi)} photos there, {len(host)} here; {faces} faces, {same} with the same "
      f"box and label; {ties} near ties (under {NEAR_TIE} on both machines) decided differently or kept on one "
      f"only; largest score difference {score:.4f}; sure verdicts that differ: {bad or 'none'}")
sys.exit(0 if len(pi) == len(host) and not bad else 1)
EOF

# --- a synthetic door, here and there -----------------------------------------------------------
for c in with_mask without_mask incorrect_mask; do
  mkdir -p "$WORK/faces/$c"
  find "$SHARED/data/faces/$c" -type f | sort | sed -n "1,${FACES}p" | xargs -I{} cp {} "$WORK/faces/$c/"
done
DEMO="demo --source synthetic --faces faces --fast --visits 12 --seed 1"  # split into words on purpose
inside "cd /tmp/maskgate-check && $V/maskgate $DEMO --detector-model /var/lib/maskgate/models" \
  >"$WORK/pi-demo.txt" 2>"$WORK/pi-demo.err"
# shellcheck disable=SC2086
(cd "$WORK" && "$HOST_MASKGATE" $DEMO --detector-model "$SHARED/models" >"$WORK/host-demo.txt" 2>/dev/null)
# Lines start with the wall-clock time; the rest (frame, decision, faces, outputs) is compared. The
# door's actions (lines with "->": door open, buzzer) must match exactly; other decision lines may
# differ by a frame (OpenCV's resize rounds differently on NEON and x86 SIMD, and a face at the
# picture's edge can be found one frame more or less): they are listed, not counted as a failure.
strip() { cut -c14- "$1"; }
if diff <(strip "$WORK/pi-demo.txt" | grep -e '->') <(strip "$WORK/host-demo.txt" | grep -e '->') >/dev/null; then
  say "demo: the same door actions at the same frames there and here: $(grep -c 'door open' "$WORK/pi-demo.txt") door openings, $(grep -c 'buzzer' "$WORK/pi-demo.txt") buzzer lines"
else
  say "demo: the door's actions differ:"; diff <(strip "$WORK/pi-demo.txt" | grep -e '->') <(strip "$WORK/host-demo.txt" | grep -e '->') || true
  status=1
fi
if diff <(strip "$WORK/pi-demo.txt") <(strip "$WORK/host-demo.txt") >"$WORK/demo.diff"; then
  say "demo: all $(wc -l <"$WORK/pi-demo.txt") decision lines are the same"
else
  say "demo: decision lines that differ (< there, > here):"; cat "$WORK/demo.diff"
fi

# --- the installer's self-test, as the service user ---------------------------------------------
cp "$SHARED/data/scenes/images/maksssksksss15.jpg" "$WORK/door.jpg"
say "maskgate check as user maskgate (GPIO fails: there is none under emulation)"
inside "cd /tmp && sudo -u maskgate $V/maskgate check --config /etc/maskgate/maskgate.toml --source /tmp/maskgate-check/door.jpg" \
  2>/dev/null | tee "$WORK/check.txt" || true
for row in camera "face detector" classifier; do
  grep -q "^$row *pass" "$WORK/check.txt" || { say "self-test: $row did not pass"; status=1; }
done
if ((status == 0)); then say "all comparisons matched"; else say "something differed (see above)"; fi
exit "$status"
