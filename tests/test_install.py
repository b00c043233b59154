"""systemd/install.sh against a temporary root with the real tools, and the unit's own checks.

What runs here: user and groups (`useradd --root`), config, state directory, unit and drop-in,
`systemctl --root=DIR enable`, a real venv built from a maskgate wheel (`--wheelhouse`, with
`--no-deps` because the test has no offline wheels of numpy/OpenCV/LiteRT), upgrade, rollback,
uninstall, purge; `systemd-analyze verify` and `security --offline=true`; shellcheck.
What does not: apt (`--root` skips it), pip resolving dependencies (see
systemd/pi-dependency-resolution.md), the detector download (`--no-fetch`), starting the service.

The temporary root is seeded the way an OS image would be: minimal /etc/passwd, group, shadow and
gshadow, and the host's systemd units, kill and nologin (verify resolves them inside the root).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, require_data

INSTALL = REPO / "systemd" / "install.sh"
UNIT = REPO / "systemd" / "maskgate.service"
FAILSAFE = REPO / "systemd" / "maskgate-failsafe.service"
CORAL = REPO / "systemd" / "maskgate.service.d" / "coral-usb.conf"
RESTART_MODE = REPO / "systemd" / "maskgate.service.d" / "restart-mode.conf"
EXAMPLE = REPO / "edge" / "maskgate" / "data" / "maskgate.example.toml"
MAX_EXPOSURE = 3.0


def _need(ok: bool, msg: str) -> None:
    if not ok:
        if require_data():
            pytest.fail(msg)
        pytest.skip(msg)


def _tool(name: str, package: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    _need(path is not None, f"{name} not found (apt-get install {package})")
    assert path is not None
    return path


@pytest.fixture(scope="module")
def tools() -> dict[str, str]:
    found = {
        "systemd-analyze": _tool("systemd-analyze", "systemd"),
        "systemctl": _tool("systemctl", "systemd"),
        "useradd": _tool("useradd", "passwd"),
        "shellcheck": _tool("shellcheck", "shellcheck"),
    }
    _need(os.geteuid() == 0, "the installer tests need root (useradd --root, chown)")
    return found


def _run(*cmd: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def _seed_root(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\n")
    for name, line in (("shadow", "root:*:19000:0:99999:7:::\n"), ("gshadow", "root:*::\n")):
        (root / "etc" / name).write_text(line)
        (root / "etc" / name).chmod(0o640)
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    for tool in ("/usr/bin/kill", "/usr/sbin/nologin"):
        dest = root / tool.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(tool, dest)
    (root / "bin").symlink_to("usr/bin")
    return root


def _snapshot(root: Path) -> dict[str, tuple[str, ...]]:
    """Every path under root: type+mode, owner, and content (file bytes or link target)."""
    out: dict[str, tuple[str, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", oct(st.st_mode & 0o7777), f"{st.st_uid}:{st.st_gid}")
            else:
                out[rel] = ("file", oct(st.st_mode & 0o7777), f"{st.st_uid}:{st.st_gid}",
                            p.read_bytes().hex() if st.st_size < 1 << 20 else str(st.st_size))
    return out


def _ids(root: Path, db: str, name: str) -> list[str]:
    for line in (root / "etc" / db).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields
    raise AssertionError(f"{name} not in {db}")


def _install(root: Path, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run("bash", INSTALL, "--root", root, *args, check=check)


def _verify(tools: dict[str, str], root: Path) -> str:
    """`systemd-analyze verify` exits 0 on many errors: its output is the verdict."""
    proc = _run(tools["systemd-analyze"], "verify", f"--root={root}", "maskgate.service",
                "maskgate-failsafe.service", check=False)
    return (proc.stdout + proc.stderr).strip()


def _exposure(tools: dict[str, str], *args: str, unit: str = "maskgate.service") -> float:
    proc = _run(tools["systemd-analyze"], "security", "--offline=true", "--no-pager", *args)
    m = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d+)", proc.stdout)
    assert m, proc.stdout[-500:]
    return float(m.group(1))


def _base_python() -> str:
    return getattr(sys, "_base_executable", sys.executable)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three wheelhouses, each with one maskgate wheel: the repo, then two upgrades (one line changed)."""
    base = tmp_path_factory.mktemp("wheels")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "THIRD_PARTY_NOTICES.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("edge", "convert"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    houses = []
    for i in range(3):
        if i:
            with open(src / "edge/maskgate/__init__.py", "a") as f:
                f.write(f"# upgrade marker {i} for tests/test_install.py\n")
        house = base / f"house{i}"
        proc = _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", house, src, check=False)
        _need(proc.returncode == 0, "cannot build a maskgate wheel (needs setuptools from PyPI or the pip "
              f"cache): {proc.stderr[-400:]}")
        houses.append(house)
    return houses


# --- the unit and scripts on their own -----------------------------------------------------------

def test_scripts_are_shellcheck_clean(tools: dict[str, str]) -> None:
    scripts = sorted((REPO / "systemd").glob("*.sh"))
    assert INSTALL in scripts
    proc = _run(tools["shellcheck"], "--severity=style", *scripts, check=False)
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout


def test_unit_security_exposure(tools: dict[str, str], tmp_path: Path) -> None:
    assert _exposure(tools, str(UNIT)) <= MAX_EXPOSURE
    # and with the Coral drop-in applied, as installed
    root = tmp_path / "root"
    d = root / "etc/systemd/system"
    (d / "maskgate.service.d").mkdir(parents=True)
    shutil.copy2(UNIT, d / "maskgate.service")
    shutil.copy2(CORAL, d / "maskgate.service.d" / "coral-usb.conf")
    assert _exposure(tools, f"--root={root}", "maskgate.service") <= MAX_EXPOSURE
    assert _exposure(tools, str(FAILSAFE), unit=FAILSAFE.name) <= MAX_EXPOSURE


@pytest.mark.parametrize("unit", [UNIT, FAILSAFE], ids=lambda p: p.name)
def test_unit_says_why_for_every_hardening_option(unit: Path) -> None:
    lines = unit.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "Hardening" in line)
    end = next((i for i, line in enumerate(lines) if line.startswith("[Install]")), len(lines))
    for i in range(start + 1, end):
        line = lines[i]
        if line and not line.startswith("#"):
            key = line.split("=", 1)[0]
            j = i - 1
            while lines[j].startswith(("DeviceAllow=", "SystemCallFilter=")) and key == lines[j].split("=", 1)[0]:
                j -= 1  # consecutive values of one option share a reason
            assert lines[j].startswith("#"), f"no reason comment above {line!r}"
    if unit == FAILSAFE:
        text = unit.read_text()
        for needle in ("Conflicts=maskgate.service", "Type=notify", "Restart=no", "User=maskgate",
                       "SupplementaryGroups=gpio\n", "PrivateNetwork=yes", "DeviceAllow=char-gpiochip rw",
                       "ExecStart=/opt/maskgate/current/bin/maskgate failsafe --config /etc/maskgate/maskgate.toml"):
            assert needle in text, needle
        assert "[Install]" not in text  # never enabled: only maskgate.service's OnFailure= starts it
        return
    text = UNIT.read_text()
    for needle in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "StartLimitBurst=", "User=maskgate",
                   "SupplementaryGroups=gpio video", "StateDirectory=maskgate", "LoadCredential=",
                   "ExecReload=/bin/kill -HUP $MAINPID", "DevicePolicy=closed", "ProtectSystem=strict",
                   "PrivateTmp=yes", "NoNewPrivileges=yes", "DeviceAllow=char-video4linux rw",
                   "DeviceAllow=char-media rw", "DeviceAllow=char-dma_heap rw", "DeviceAllow=char-gpiochip rw",
                   "OnFailure=maskgate-failsafe.service",
                   "ExecStopPost=-/opt/maskgate/current/bin/maskgate failsafe --off --config "
                   "/etc/maskgate/maskgate.toml"):
        assert needle in text, needle
    assert "DeviceAllow=char-usb_device rw" in CORAL.read_text()


def test_verify_output_is_a_real_check(tools: dict[str, str], tmp_path: Path) -> None:
    """A broken unit makes verify print (while exiting 0 or not): the empty-output check means something."""
    root = _seed_root(tmp_path / "root")
    (root / "etc/systemd/system").mkdir(parents=True)
    broken = UNIT.read_text().replace("ProtectHome=yes", "ProtectHome=yes\nProtectHomme=yes")
    (root / "etc/systemd/system/maskgate.service").write_text(broken)
    assert "ProtectHomme" in _verify(tools, root)


# --- the installer in a temporary root -------------------------------------------------------------

def test_install_without_venv_then_again_changes_nothing(tools: dict[str, str], tmp_path: Path) -> None:
    root = _seed_root(tmp_path / "root")
    before = _snapshot(root)
    first = _install(root, "--no-venv", "--no-fetch")
    assert "skipped venv and pip (--no-venv)" in first.stdout
    after = _snapshot(root)

    user = _ids(root, "passwd", "maskgate")
    uid, gid = int(user[2]), int(user[3])
    assert uid < 1000 and user[5] == "/var/lib/maskgate" and user[6] == "/usr/sbin/nologin"
    for g in ("gpio", "video"):
        assert "maskgate" in _ids(root, "group", g)[3].split(",")
    owner = f"{uid}:{gid}"

    def file(path: str, mode: int, own: str, content: bytes) -> tuple[str, ...]:
        return ("file", oct(mode), own, content.hex())

    expected_new = {
        "etc/maskgate": ("dir", oct(0o750), f"0:{gid}"),
        "etc/maskgate/maskgate.toml": file("", 0o640, f"0:{gid}", EXAMPLE.read_bytes()),
        "etc/maskgate/maskgate.example.toml": file("", 0o640, f"0:{gid}", EXAMPLE.read_bytes()),
        "etc/systemd": ("dir", oct(0o755), "0:0"),
        "etc/systemd/system": ("dir", oct(0o755), "0:0"),
        "etc/systemd/system/maskgate.service": file("", 0o644, "0:0", UNIT.read_bytes()),
        "etc/systemd/system/maskgate-failsafe.service": file("", 0o644, "0:0", FAILSAFE.read_bytes()),
        "etc/systemd/system/multi-user.target.wants": ("dir", oct(0o755), "0:0"),
        "etc/systemd/system/multi-user.target.wants/maskgate.service":
            ("link", "/etc/systemd/system/maskgate.service"),
        "opt": ("dir", oct(0o755), "0:0"),
        "opt/maskgate": ("dir", oct(0o755), "0:0"),
        "opt/maskgate/share": ("dir", oct(0o755), "0:0"),
        "opt/maskgate/share/INSTALL.md": file("", 0o644, "0:0", (REPO / "systemd/INSTALL.md").read_bytes()),
        "opt/maskgate/share/hardware.md": file("", 0o644, "0:0", (REPO / "hardware/README.md").read_bytes()),
        "var": ("dir", oct(0o755), "0:0"),
        "var/lib": ("dir", oct(0o755), "0:0"),
        "var/lib/maskgate": ("dir", oct(0o750), owner),
        "var/lib/maskgate/models": ("dir", oct(0o750), owner),
    }
    # useradd's own files: the updated databases, their backups and its lock file.
    useradd_files = {"etc/passwd", "etc/group", "etc/shadow", "etc/gshadow", "etc/passwd-", "etc/group-",
                     "etc/shadow-", "etc/gshadow-", "etc/.pwd.lock"}
    changed = {p for p in after if before.get(p) != after[p]}
    assert changed - useradd_files == set(expected_new)
    for path, want in expected_new.items():
        assert after[path] == want, path
    assert set(before) <= set(after)  # nothing of the image was removed

    second = _install(root, "--no-venv", "--no-fetch")
    assert _snapshot(root) == after
    assert not re.search(r"\b(wrote|created|added)\b", second.stdout), second.stdout

    # The shop's config is never overwritten; the example is refreshed beside it.
    conf = root / "etc/maskgate/maskgate.toml"
    conf.write_text(conf.read_text().replace('mode = "enforce"', 'mode = "advisory"'))
    third = _install(root, "--no-venv", "--no-fetch")
    assert 'mode = "advisory"' in conf.read_text()
    assert "kept your /etc/maskgate/maskgate.toml" in third.stdout


def test_coral_drop_in_and_group(tools: dict[str, str], tmp_path: Path) -> None:
    root = _seed_root(tmp_path / "root")
    _install(root, "--no-venv", "--no-fetch")
    _install(root, "--no-venv", "--no-fetch", "--coral")  # upgrade an existing user with a new group
    drop_in = root / "etc/systemd/system/maskgate.service.d/coral-usb.conf"
    assert drop_in.read_bytes() == CORAL.read_bytes()
    assert stat.S_IMODE(drop_in.stat().st_mode) == 0o644
    assert "maskgate" in _ids(root, "group", "plugdev")[3].split(",")
    snap = _snapshot(root)
    _install(root, "--no-venv", "--no-fetch", "--coral")
    assert _snapshot(root) == snap


def test_restart_mode_drop_in_only_where_systemd_knows_it(tools: dict[str, str], tmp_path: Path) -> None:
    """systemd 254+ starts OnFailure= (the fail-safe) at every automatic restart unless RestartMode=direct
    (seen on Trixie's 257 in systemd-container-check.sh); 252 (Bookworm) warns about the unknown key."""
    root = _seed_root(tmp_path / "root")
    lib = root / "usr/lib/aarch64-linux-gnu/systemd"
    lib.mkdir(parents=True)
    (lib / "libsystemd-shared-257.so").touch()
    out = _install(root, "--no-venv", "--no-fetch").stdout
    drop_in = root / "etc/systemd/system/maskgate.service.d/restart-mode.conf"
    assert "wrote /etc/systemd/system/maskgate.service.d/restart-mode.conf" in out
    assert drop_in.read_bytes() == RESTART_MODE.read_bytes() and stat.S_IMODE(drop_in.stat().st_mode) == 0o644
    assert "\nRestartMode=direct\n" in drop_in.read_text()
    snap = _snapshot(root)
    _install(root, "--no-venv", "--no-fetch")
    assert _snapshot(root) == snap

    (lib / "libsystemd-shared-257.so").rename(lib / "libsystemd-shared-252.so")  # an image moved back to Bookworm
    out = _install(root, "--no-venv", "--no-fetch").stdout
    assert not drop_in.exists() and "systemd 252 does not know RestartMode=" in out
    assert not any(line.startswith("RestartMode=") for f in (root / "etc/systemd/system").rglob("*") if f.is_file()
                   for line in f.read_text().splitlines())


def test_install_upgrade_rollback_uninstall_with_a_venv(tools: dict[str, str], tmp_path: Path,
                                                         wheels: list[Path]) -> None:
    root = _seed_root(tmp_path / "root")
    house_a, house_b, house_c = wheels
    common = ("--no-fetch", "--no-deps", "--python", _base_python())
    out = _install(root, "--wheelhouse", house_a, *common).stdout
    assert "pip install maskgate-0.1.0-py3-none-any.whl" in out

    opt = root / "opt/maskgate"
    rel_a = os.readlink(opt / "current")
    assert rel_a.startswith("venvs/0.1.0-") and not (opt / "previous").exists()
    venv = opt / rel_a
    assert (venv / ".maskgate-release").read_text().strip() == rel_a.removeprefix("venvs/")
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    script = (venv / "bin/maskgate").read_text()
    assert script.startswith(f"#!/opt/maskgate/{rel_a}/bin/python\n")  # paths of the target, not the tmp root
    assert str(root) not in script and str(root) not in (venv / "pyvenv.cfg").read_text()
    installed = list(venv.glob("lib/python3*/site-packages/maskgate/data/maskgate.example.toml"))
    assert len(installed) == 1
    assert (root / "etc/maskgate/maskgate.toml").read_bytes() == installed[0].read_bytes()
    constraints = (opt / "constraints.txt").read_text()
    assert re.search(r"^numpy==\d", constraints, re.M) or "no system numpy" in constraints

    assert _verify(tools, root) == ""
    assert _exposure(tools, f"--root={root}", "maskgate.service") <= MAX_EXPOSURE
    assert _exposure(tools, f"--root={root}", FAILSAFE.name, unit=FAILSAFE.name) <= MAX_EXPOSURE

    snap = _snapshot(root)
    again = _install(root, "--wheelhouse", house_a, *common).stdout
    assert "pip install" not in again
    assert _snapshot(root) == snap

    # Upgrade: a new venv; the old one kept as previous.
    _install(root, "--wheelhouse", house_b, *common)
    rel_b = os.readlink(opt / "current")
    assert rel_b != rel_a and os.readlink(opt / "previous") == rel_a
    assert "upgrade marker 1" in next((opt / rel_b).glob("lib/python3*/site-packages/maskgate/__init__.py")).read_text()
    with zipfile.ZipFile(next(house_b.glob("*.whl"))) as z:
        assert any(n.endswith("maskgate/__init__.py") for n in z.namelist())

    # Rollback swaps them; again undoes it.
    out = _run("bash", INSTALL, "--root", root, "--rollback").stdout
    assert "rolled back" in out
    assert os.readlink(opt / "current") == rel_a and os.readlink(opt / "previous") == rel_b
    _run("bash", INSTALL, "--root", root, "--rollback")
    assert os.readlink(opt / "current") == rel_b

    # A third version prunes the oldest: only current and previous stay.
    _install(root, "--wheelhouse", house_c, *common)
    rel_c = os.readlink(opt / "current")
    assert os.readlink(opt / "previous") == rel_b
    assert sorted(p.name for p in (opt / "venvs").iterdir()) == sorted([rel_b[6:], rel_c[6:]])

    # Uninstall keeps config, state and user; purge removes them.
    _run("bash", INSTALL, "--root", root, "--uninstall")
    assert not opt.exists() and not (root / "etc/systemd/system/maskgate.service").exists()
    assert not (root / "etc/systemd/system/maskgate-failsafe.service").exists()
    assert not (root / "etc/systemd/system/multi-user.target.wants/maskgate.service").is_symlink()
    assert (root / "etc/maskgate/maskgate.toml").exists() and (root / "var/lib/maskgate").is_dir()
    _ids(root, "passwd", "maskgate")
    _run("bash", INSTALL, "--root", root, "--uninstall", "--purge")
    assert not (root / "etc/maskgate").exists() and not (root / "var/lib/maskgate").exists()
    assert "maskgate:" not in (root / "etc/passwd").read_text()


def test_installer_refuses_clearly(tools: dict[str, str], tmp_path: Path) -> None:
    root = _seed_root(tmp_path / "root")
    no_example = tmp_path / "src"
    (no_example / "edge").mkdir(parents=True)
    shutil.copy2(REPO / "pyproject.toml", no_example / "pyproject.toml")
    proc = _install(root, "--no-venv", "--no-fetch", "--source", no_example, check=False)
    assert proc.returncode != 0 and "example config not found" in proc.stderr
    proc = _run("bash", INSTALL, "--root", root, "--rollback", check=False)
    assert proc.returncode != 0 and "nothing installed" in proc.stderr
    proc = _install(root, "--bogus", check=False)
    assert proc.returncode != 0 and "unknown option: --bogus" in proc.stderr
