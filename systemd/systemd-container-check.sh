#!/usr/bin/env bash
# Install maskgate with systemd/install.sh into a Debian container that boots its own systemd, and
# check the service as systemd runs it: the hardened unit, the notify protocol, reload, stop, restart
# after a crash, the watchdog, and the fail-safe unit at the start limit.
#
#   sudo systemd/systemd-container-check.sh [--suite bookworm|trixie] [--root DIR] [--shared DIR] [--keep]
#
# The container is debootstrap's Debian 12 (bookworm, the default) or 13 (trixie) for this machine's
# architecture, booted with `systemd-nspawn -b`: a real systemd as its PID 1 (252 on bookworm, 257 on
# trixie: the versions Raspberry Pi OS Bookworm and Trixie run), so the unit's sandbox
# (ProtectSystem=strict, the system call filter, no capabilities, DevicePolicy=closed ...) is really
# applied. There is no camera and no GPIO in it, so after a first
# check with the installed default config (picamera2 and real pins: the start fails, systemd gives up
# after 5 starts and starts maskgate-failsafe.service), the config replays photos of
# $SHARED/data/scenes (held 2 s each, looped) through the `journal` pin factory: mock pins that
# append every write to a file, which outlives the process, so the relay's history can be read
# across stops, crashes and restarts. A drop-in (as `systemctl edit` would write) sets its path.
#
# Checks, each printed with what it saw; exit status 0 only if all pass:
#   systemd-analyze verify   the installed units and drop-ins, as this systemd reads them: no output
#   default config, no GPIO  start fails (exit 2, "cannot set up GPIO 22"), 5 restarts, then the
#                            start limit and OnFailure= starts maskgate-failsafe.service, once
#   start                    active (running) after READY=1, with a STATUS= line
#   sandbox                  the main process has no capabilities, no_new_privs, a seccomp filter,
#                            a read-only /usr; `systemd-analyze security` exposure <= 3.0
#   running                  after 40 s: watchdog pings arrive, no restart, allow and deny events
#                            in /var/lib/maskgate/events; the relay never on longer than relay_max_on
#                            (15 s) + 0.2 s (a pulse is 5 s; masked people in a row extend it)
#   journal priorities       the daemon's log lines carry their priority (journalctl -p warning shows
#                            the warnings, not LiteRT's info line) and no time stamp of their own
#   status page              bound to 0.0.0.0 with its token from /etc/credstore (LoadCredential=):
#                            401 without it; /healthz 200 and a frames counter in /metrics with it
#   reload                   `systemctl reload`: same PID, STATUS "configuration reloaded"; a broken
#                            file: same PID, STATUS says the running configuration was kept
#   stop                     `systemctl stop`: result success, the relay's last write is off
#   SIGKILL                  during a door pulse: ExecStopPost= (maskgate failsafe --off) drives the
#                            relay off within 4 s, before systemd restarts the gate
#   watchdog                 a process frozen (SIGSTOP) during a door pulse is killed by systemd's
#                            watchdog (WatchdogSec=10) and restarted; the relay was on at most
#                            relay_max_on (15 s) + 0.2 s in all
#   start limit              6 kills in a row: unit failed, maskgate-failsafe.service runs (relay
#                            off, red and green blinking together); `systemctl start maskgate`
#                            stops the fail-safe (Conflicts=) and the gate runs again
#   outside the group        `maskgate stats`, `config check` and `run` as a user outside the maskgate
#                            group: the fix (sudo, or the group), no traceback
#   install.sh again         nothing changed: the running gate is left alone (same PID)
#   install.sh --uninstall   the gate stopped and its units gone, relay off, no fail-safe
#
# Needs root, network access to Debian's archive and PyPI, and about 1 GB in DIR (reused on a second
# run). Installs debootstrap and systemd-container on this machine if missing. Takes about 3 minutes
# (a minute more the first time). --keep leaves the container running and prints how to enter it.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SUITE=bookworm
ROOT=
SHARED=${MASKGATE_SHARED:-$REPO/../shared}
KEEP=0
MIRROR=http://deb.debian.org/debian
YUNET=face_detection_yunet_2023mar.onnx
MACHINE=maskgate-check
# photos from the scene tuning half whose faces are all >= 48 px (tests/test_gate_pipeline.py)
PHOTOS=(10 125 146 16 165 170 172 193 196 20)

while (($#)); do
  case $1 in
    --suite) SUITE=$2; shift ;;
    --root) ROOT=$2; shift ;;
    --shared) SHARED=$2; shift ;;
    --keep) KEEP=1 ;;
    -h | --help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
  shift
done

[[ $SUITE == bookworm || $SUITE == trixie ]] || { echo "--suite: bookworm or trixie (got $SUITE)" >&2; exit 2; }
ROOT=${ROOT:-/var/tmp/maskgate-systemd-$SUITE}
say() { printf 'systemd-check: %s\n' "$*"; }
die() { printf 'systemd-check: error: %s\n' "$*" >&2; exit 1; }
FAILED=0
OK=0
ok() { "$@" || OK=1; }  # ok COMMAND...: a condition that may fail without ending the script (set -e)
check() {  # check NAME DETAIL: pass if every `ok` since the last check held
  if ((OK == 0)); then say "pass  $1: $2"; else say "FAIL  $1: $2"; FAILED=1; fi
  OK=0
}
# shellcheck disable=SC2317  # called through ok
le() { [[ $1 =~ ^-?[0-9]+(\.[0-9]+)?$ ]] && awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 <= b + 0) }'; }  # le A B: numbers, A <= B

[[ $(id -u) -eq 0 ]] || die "run as root (debootstrap and systemd-nspawn need it)"
[[ -f $SHARED/models/$YUNET && -d $SHARED/data/scenes/images ]] \
  || die "$SHARED: no models/$YUNET or data/scenes/images (--shared DIR)"

if ! command -v systemd-nspawn >/dev/null || ! command -v debootstrap >/dev/null; then
  say "installing systemd-container and debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd-container debootstrap >/dev/null
fi

# --- the container's root -----------------------------------------------------------------------
if [[ ! -x $ROOT/lib/systemd/systemd || ! -x $ROOT/usr/bin/python3 ]]; then
  say "debootstrap $SUITE into $ROOT (a few minutes)"
  debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,python3,python3-venv,python3-pip,python3-numpy,ca-certificates,passwd,sudo,procps \
    "$SUITE" "$ROOT" "$MIRROR" >/dev/null
fi
# this machine's CA bundle and resolver: apt and pip inside behave as here (proxies included)
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
echo "$MACHINE" >"$ROOT/etc/hostname"
rm -rf "$ROOT/opt/src/maskgate" "$ROOT/srv/door"
mkdir -p "$ROOT/opt/src" "$ROOT/srv/door"
git -C "$REPO" archive HEAD --prefix=maskgate/ | tar -x -C "$ROOT/opt/src"
cp "$SHARED/models/$YUNET" "$ROOT/opt/src/$YUNET"
for n in "${PHOTOS[@]}"; do cp "$SHARED/data/scenes/images/maksssksksss$n.jpg" "$ROOT/srv/door/"; done

# --- boot it ------------------------------------------------------------------------------------
LOG=$ROOT.boot.log
systemd-nspawn -q -D "$ROOT" -b --keep-unit --register=no -M "$MACHINE" >"$LOG" 2>&1 &
NSPAWN=$!
LEADER=
# shellcheck disable=SC2317  # called by the EXIT trap
finish() {
  if ((KEEP)) && [[ -n $LEADER ]]; then
    say "container left running: sudo nsenter -t $LEADER -a /bin/bash   (stop: sudo kill $NSPAWN)"
  elif kill -0 "$NSPAWN" 2>/dev/null; then
    [[ -n $LEADER ]] && inside "systemctl poweroff --no-block" >/dev/null 2>&1 || kill "$NSPAWN" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$NSPAWN" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$NSPAWN" 2>/dev/null || true
  fi
}
trap finish EXIT
inside() {
  nsenter -t "$LEADER" -m -u -i -n -p -- /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    ${https_proxy:+https_proxy=$https_proxy} ${http_proxy:+http_proxy=$http_proxy} /bin/bash -c "$1"
}
for _ in $(seq 120); do
  LEADER=$(pgrep -P "$NSPAWN" | head -1 || true)
  [[ -n $LEADER ]] && state=$(inside "systemctl is-system-running" 2>/dev/null || true) \
    && [[ $state == running || $state == degraded ]] && break
  kill -0 "$NSPAWN" 2>/dev/null || { cat "$LOG"; die "the container did not boot"; }
  sleep 1
done
say "booted $SUITE: $(inside 'systemctl --version | head -1'), $(inside 'python3 --version'), system $(inside 'systemctl is-system-running')"

# --- install as on a Pi -------------------------------------------------------------------------
say "install.sh inside ($(git -C "$REPO" rev-parse --short HEAD))"
inside "cd /opt/src/maskgate && bash systemd/install.sh --detector-url file:///opt/src/$YUNET" \
  >"$ROOT.install.log" 2>&1 || { cat "$ROOT.install.log"; die "install.sh failed"; }
grep '^maskgate-install' "$ROOT.install.log"

show() { inside "systemctl show maskgate -p $1 --value"; }
pid() { show MainPID; }
journal_since() { inside "journalctl -u $1 --no-pager -o cat --since '$2'"; }
now() { inside "date '+%Y-%m-%d %H:%M:%S'"; }
wait_for() {  # wait_for SECONDS COMMAND: until COMMAND (inside) succeeds
  local i
  for ((i = 0; i < $1 * 2; i++)); do inside "$2" >/dev/null 2>&1 && return 0; sleep 0.5; done
  return 1
}

# --- 1. the installed default config: no camera, no GPIO here -----------------------------------
# (a reused root keeps the config and drop-ins of the last run: back to what install.sh writes)
inside "systemctl stop maskgate maskgate-failsafe; rm -f /etc/systemd/system/maskgate*.service.d/check-pins.conf
  cp /etc/maskgate/maskgate.example.toml /etc/maskgate/maskgate.toml
  systemctl daemon-reload; systemctl reset-failed maskgate maskgate-failsafe" >/dev/null 2>&1 || true
verify=$(inside "systemd-analyze verify maskgate.service maskgate-failsafe.service 2>&1" || true)
ok [ -z "$verify" ]
check "systemd-analyze verify" "${verify:-no output} (drop-ins: $(inside 'ls /etc/systemd/system/maskgate.service.d 2>/dev/null | paste -sd " "'))"

t0=$(now)
inside "systemctl start maskgate" >/dev/null 2>&1 || true
wait_for 60 "systemctl is-failed --quiet maskgate && ! systemctl is-active --quiet maskgate-failsafe && \
  journalctl -u maskgate-failsafe --since '$t0' -o cat | grep -q 'Failed with result'" || true
restarts=$(show NRestarts)
gpio=$(inside "journalctl -u maskgate -p err -o cat --since '$t0'" | grep -c 'cannot set up GPIO 22' || true)
onfail=$(journal_since maskgate "$t0" | grep -c 'Triggering OnFailure=' || true)
# OnFailure= once, at the start limit; systemd 254+ would start it at every restart without the
# installer's RestartMode=direct drop-in
ok [ "$restarts" = 5 ]; ok [ "$gpio" -ge 1 ]; ok [ "$onfail" = 1 ]
check "default config, no GPIO" "$restarts restarts, 'cannot set up GPIO 22' $gpio times at priority err, OnFailure= triggered $onfail time(s), then $(inside 'systemctl is-active maskgate-failsafe' || true) fail-safe (no GPIO for it either)"

# --- 2. replayed photos, journal pins ------------------------------------------------------------
JOURNAL=/var/lib/maskgate-pins/pins.journal
inside "install -d -m 0777 /var/lib/maskgate-pins && rm -f $JOURNAL"
cat >"$ROOT/etc/maskgate/maskgate.toml" <<'EOF'
# systemd-container-check.sh: photos instead of a camera, pins journalled to a file
[source]
type = "replay"
device = "/srv/door"
fps = 10.0
hold = 20
loop = true

[outputs]
pin_factory = "journal"

[http]
enabled = true
host = "0.0.0.0"
port = 48080
EOF
# off loopback the status page needs a token: from systemd's credential store (LoadCredential=), as
# the README tells a shop to set it up
inside "install -d -m 0700 /etc/credstore && head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >/etc/credstore/maskgate-http-token
  chmod 0600 /etc/credstore/maskgate-http-token"
for unit in maskgate maskgate-failsafe; do
  mkdir -p "$ROOT/etc/systemd/system/$unit.service.d"
  printf '[Service]\nEnvironment=MASKGATE_PIN_JOURNAL=%s\nReadWritePaths=%s\n' "$JOURNAL" "${JOURNAL%/*}" \
    >"$ROOT/etc/systemd/system/$unit.service.d/check-pins.conf"
done
inside "systemctl daemon-reload && systemctl reset-failed maskgate maskgate-failsafe"
# relay and LED writes from the journal: "<epoch> <pin> <0|1|released>"
relay_pulses() {  # the relay's on-times (s) in the journal, one per line; "open" if still on
  inside "cat $JOURNAL" | awk '$2 == 22 { if ($3 == "1" && on == "") on = $1; else if ($3 != "1" && on != "") { printf "%.3f\n", $1 - on; on = "" } }
    END { if (on != "") print "open" }'
}
relay_last() { inside "awk '\$2 == 22 { v = \$3 } END { print v }' $JOURNAL"; }

t0=$(now)
inside "systemctl start maskgate"
ok [ "$(show ActiveState)" = active ]; ok [ -n "$(show StatusText)" ]
check "start" "$(show ActiveState) ($(show SubState)), pid $(pid), status \"$(show StatusText)\""

P=$(pid)
sandbox=$(inside "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/$P/status | tr -s '\t ' ' ' | paste -sd ';'")
ro=$(inside "nsenter -t $P -m sh -c 'touch /usr/.maskgate-check 2>&1'" || true)
exposure=$(inside "systemd-analyze security maskgate --no-pager" | sed -n 's/.*Overall exposure level for maskgate.service: \([0-9.]*\).*/\1/p')
for want in "CapEff: 0000000000000000" "CapBnd: 0000000000000000" "NoNewPrivs: 1" "Seccomp: 2"; do
  ok grep -q "$want" <<<"$sandbox"
done
ok grep -q "Read-only file system" <<<"$ro"; ok le "$exposure" 3.0
check "sandbox" "$sandbox; /usr: ${ro##*: }; systemd-analyze security: $exposure"

sleep 40
events=/var/lib/maskgate/events/events.jsonl
allows=$(inside "grep -c '\"outcome\":\"allow\"' $events" || true)
denies=$(inside "grep -c '\"outcome\":\"deny\"' $events" || true)
pulses=$(relay_pulses | paste -sd ' ' || true)
longest=$(relay_pulses | { grep -v open || true; } | sort -n | tail -1)
wd_ago=$(($(inside "date +%s") - $(inside "date -d \"\$(systemctl show maskgate -p WatchdogTimestamp --value)\" +%s")))
ok [ "$(show NRestarts)" = 0 ]; ok [ "$(pid)" = "$P" ]; ok [ "$allows" -ge 1 ]; ok [ "$denies" -ge 1 ]
watchdog_s=$(show WatchdogUSec | sed -n 's/^\([0-9]*\)s$/\1/p')  # WatchdogSec= (e.g. "10s")
ok [ -n "$watchdog_s" ]
ok le "$longest" 15.2; ok le "$wd_ago" "$watchdog_s"
check "running 40 s" "restarts $(show NRestarts), last watchdog ping $wd_ago s ago, events: $allows allow, $denies deny; relay pulses (s): $pulses"

# the daemon's lines in the journal: a priority each (no time stamp of its own: the journal has one)
warnings=$(inside "journalctl -u maskgate -p warning -o cat --since '$t0'" | grep -c 'wall clock not known' || true)
infos=$(inside "journalctl -u maskgate -p warning -o cat --since '$t0'" | grep -c 'XNNPACK' || true)
stamped=$(inside "journalctl -u maskgate -o cat --since '$t0'" | grep -cE '^[0-9]{4}-[0-9]{2}-[0-9]{2} ' || true)
ok [ "$warnings" -ge 1 ]; ok [ "$infos" = 0 ]; ok [ "$stamped" = 0 ]
check "journal priorities" "the clock warning at priority warning: $warnings; LiteRT's info line among warnings: $infos; lines with their own time stamp: $stamped"

# get PATH [TOKEN]: the status page's answer, from inside the container: "<status> <first line>"
get() {
  inside "python3 - $1 ${2:-} <<'PY'
import sys, urllib.error, urllib.request
req = urllib.request.Request('http://127.0.0.1:48080' + sys.argv[1])
if len(sys.argv) > 2:
    req.add_header('Authorization', 'Bearer ' + sys.argv[2])
try:
    with urllib.request.urlopen(req, timeout=5) as r:
        status, body = r.status, r.read().decode(errors='replace')
except urllib.error.HTTPError as e:
    status, body = e.code, e.read().decode(errors='replace')
want = sys.argv[3] if len(sys.argv) > 3 else ''
lines = [l for l in body.splitlines() if l.startswith(want)] or ['']
print(status, lines[0][:100])
PY"
}
token=$(inside "cat /etc/credstore/maskgate-http-token")
no_token=$(get /api/status)
health=$(get /healthz "$token")
frames=$(get /metrics "$token maskgate_frames_total")
ok grep -q "^401 " <<<"$no_token"; ok grep -q "^200 " <<<"$health"; ok grep -q "^200 maskgate_frames_total [1-9]" <<<"$frames"
check "status page, token from the credential store" "without the token: $no_token; /healthz with it: $health; /metrics: $frames"

inside "systemctl reload maskgate"
sleep 2
ok [ "$(pid)" = "$P" ]; ok [ "$(show StatusText)" = "configuration reloaded" ]; ok [ "$(show ActiveState)" = active ]
check "reload" "pid $(pid), status \"$(show StatusText)\""
cp "$ROOT/etc/maskgate/maskgate.toml" "$ROOT/tmp/good.toml"
printf '\n[decision]\nmask_scor = 0.9\n' >>"$ROOT/etc/maskgate/maskgate.toml"
inside "systemctl reload maskgate"
sleep 2
ok [ "$(pid)" = "$P" ]; ok grep -q "running configuration kept.*decision.mask_scor: unknown key" <<<"$(show StatusText)"
ok [ "$(show ActiveState)" = active ]
check "reload, broken file" "pid $(pid), status \"$(show StatusText)\""
cp "$ROOT/tmp/good.toml" "$ROOT/etc/maskgate/maskgate.toml"

# stop in the middle of a door pulse when there is one, else whenever
wait_for 20 "awk '\$2 == 22 { v = \$3 } END { exit v != \"1\" }' $JOURNAL" || true
was=$(relay_last)
inside "systemctl stop maskgate"
ok [ "$(show Result)" = success ]; ok [ "$(show ActiveState)" = inactive ]; ok [ "$(relay_last)" != 1 ]
check "stop" "relay was ${was:-never written} when stopped, its last write now: $(relay_last); result $(show Result)"

inside "systemctl start maskgate"
wait_for 20 "awk '\$2 == 22 { v = \$3 } END { exit v != \"1\" }' $JOURNAL" || true
was=$(relay_last)
P=$(pid)
t_kill=$(inside "date +%s.%N")
inside "systemctl kill -s KILL maskgate"
wait_for 30 "[ \$(systemctl show maskgate -p MainPID --value) != 0 ] && [ \$(systemctl show maskgate -p MainPID --value) != $P ] && systemctl is-active --quiet maskgate"
# the relay's first write after the kill: ExecStopPost's (maskgate failsafe --off), before systemd
# restarts the gate RestartSec (5 s) later; it must drive the relay off
first=$(inside "awk -v t=$t_kill '\$1 > t && \$2 == 22 { printf \"%s %.1f\", \$3, \$1 - t; exit }' $JOURNAL")
ok [ "$(pid)" != "$P" ]; ok [ "$(show ActiveState)" = active ]; ok [ "${first% *}" = 0 ]; ok le "${first#* }" 4
check "SIGKILL" "relay was ${was:-never written} when killed; its first write after the kill: ${first% *}, ${first#* } s later (ExecStopPost=); restarted as pid $(pid) ($(show NRestarts) restart(s))"

P=$(pid)
restarts=$(show NRestarts)
# freeze it during a door pulse when there is one: the relay's safety timer is frozen too, so only
# the watchdog (WatchdogSec=) and ExecStopPost= end the pulse
wait_for 30 "awk '\$2 == 22 { v = \$3 } END { exit v != \"1\" }' $JOURNAL" || true
was=$(relay_last)
t_stop=$(inside "date +%s.%N")
say "freezing pid $P (SIGSTOP) for the watchdog (${watchdog_s} s), relay ${was:-never written}"
inside "kill -STOP $P"
wait_for 90 "[ \$(systemctl show maskgate -p NRestarts --value) -gt $restarts ] && systemctl is-active --quiet maskgate" || true
wdlog=$(journal_since maskgate "-3min" | grep -c 'Watchdog timeout' || true)
# how long the relay stayed on: from its last "on" write before the freeze to the next write after it
held=$(inside "awk -v t=$t_stop '\$2 == 22 && \$1 <= t { v = \$3; on = \$1 } \$2 == 22 && \$1 > t { if (v == \"1\") printf \"%.1f\", \$1 - on; else printf \"off\"; exit }' $JOURNAL")
off_after=$(inside "awk -v t=$t_stop '\$2 == 22 && \$1 > t { printf \"%.1f\", \$1 - t; exit }' $JOURNAL")
ok [ "$wdlog" -ge 1 ]; ok [ "$(show ActiveState)" = active ]; ok [ "$(pid)" != "$P" ]; ok [ -n "$held" ]
[ "$held" = off ] || ok le "$held" 15.2
check "watchdog" "'Watchdog timeout' in the journal: $wdlog; relay first written ${off_after:-never} s after the freeze; relay on for ${held:-?} s in all (relay_max_on 15); running again as pid $(pid), restarts $(show NRestarts)"

t0=$(now)
for _ in 1 2 3 4 5 6; do
  inside "systemctl kill -s KILL maskgate" >/dev/null 2>&1 || true
  wait_for 15 "systemctl is-active --quiet maskgate || systemctl is-failed --quiet maskgate" || true
  inside "systemctl is-failed --quiet maskgate" && break
done
wait_for 30 "systemctl is-active --quiet maskgate-failsafe" || true
sleep 3
blink=$(inside "awk '\$2 == 17 || \$2 == 27 { print \$1, \$2, \$3 }' $JOURNAL" | tail -8 | awk '{ printf "%s:%s ", $2, $3 }')
ok [ "$(inside "systemctl is-failed maskgate" || true)" = failed ]
ok [ "$(inside "systemctl is-active maskgate-failsafe" || true)" = active ]; ok [ "$(relay_last)" != 1 ]
for want in 17:1 27:1 17:0 27:0; do ok grep -q "$want" <<<"$blink"; done
check "start limit" "maskgate $(inside 'systemctl is-failed maskgate' || true), fail-safe $(inside 'systemctl is-active maskgate-failsafe' || true) ($(inside "systemctl show maskgate-failsafe -p StatusText --value")), relay $(relay_last), LEDs (pin:level): $blink"

inside "systemctl reset-failed maskgate && systemctl start maskgate"
sleep 2
ok [ "$(inside "systemctl is-active maskgate" || true)" = active ]
ok [ "$(inside "systemctl is-active maskgate-failsafe" || true)" != active ]
check "start after the fail-safe" "maskgate $(inside 'systemctl is-active maskgate' || true), fail-safe $(inside 'systemctl is-active maskgate-failsafe' || true)"

# the shop owner's own login, outside the maskgate group: /etc/maskgate and /var/lib/maskgate are 0750
outsider=""
traces=0
for cmd in stats "config check" run; do
  out=$(inside "cd /tmp && setpriv --reuid=nobody --regid=nogroup --clear-groups /opt/maskgate/current/bin/maskgate $cmd 2>&1; echo rc=\$?")
  grep -q Traceback <<<"$out" && traces=$((traces + 1))
  ok grep -q "permission denied; run as root (sudo), or as a member of the maskgate group" <<<"$out"
  outsider+="maskgate $cmd: $(grep -o 'rc=[0-9]*' <<<"$out"); "
done
ok [ "$traces" = 0 ]
check "a user outside the maskgate group" "${outsider}tracebacks: $traces"

P=$(pid)
again=$(inside "cd /opt/src/maskgate && bash systemd/install.sh --detector-url file:///opt/src/$YUNET 2>&1" || true)
ok [ "$(pid)" = "$P" ]; ok grep -q "left running: nothing it uses changed" <<<"$again"
check "install.sh again" "pid $P before, $(pid) after; it said: $(grep '^maskgate-install' <<<"$again" | tail -1)"

gone=$(inside "cd /opt/src/maskgate && bash systemd/install.sh --uninstall 2>&1" || true)
ok [ "$(inside 'systemctl is-active maskgate' || true)" != active ]; ok [ ! -e "$ROOT/etc/systemd/system/maskgate.service" ]
ok [ "$(inside 'systemctl is-active maskgate-failsafe' || true)" != active ]; ok [ "$(relay_last)" != 1 ]
check "install.sh --uninstall" "gate $(inside 'systemctl is-active maskgate' || true), fail-safe $(inside 'systemctl is-active maskgate-failsafe' || true), relay's last write $(relay_last); it said: $(grep '^maskgate-install' <<<"$gone" | paste -sd ';' | cut -c1-160)"

if ((FAILED)); then say "some checks failed (journal: nsenter into the container with --keep)"; else say "all checks passed"; fi
exit "$FAILED"
