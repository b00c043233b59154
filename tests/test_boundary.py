"""Import boundaries: the device package never imports TensorFlow or the build package, not even as a
fallback; a gate loads only what its configuration uses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import importlib, json, pkgutil, sys
import maskgate
names = sorted(m.name for m in pkgutil.walk_packages(maskgate.__path__, "maskgate.") if not m.name.endswith("__main__"))
for n in names:
    importlib.import_module(n)
bad = sorted(k for k in sys.modules if k.split(".")[0] in ("tensorflow", "keras", "tf_keras", "maskgate_convert"))
print(json.dumps({"modules": names, "bad": bad}))
"""


def test_device_code_never_imports_tensorflow() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert "maskgate.classifier" in res["modules"] and "maskgate.cli" in res["modules"]
    assert res["bad"] == []


DEMO = r"""
import json, sys
from maskgate import cli
rc = cli.main(["demo", "--source", "synthetic", "--faces", sys.argv[1], "--fast", "--frames", "5",
               "--detector-model", sys.argv[2]])
print(json.dumps({"rc": rc, "loaded": sorted(m for m in ("ssl", "http.server", "http.client", "urllib.request",
                                                         "maskgate.httpd", "maskgate.mqtt") if m in sys.modules)}))
"""


def test_a_gate_without_status_page_or_mqtt_never_loads_http_or_ssl(faces_dir: Path, yunet_path: Path) -> None:
    """With [http] and [mqtt] off (the defaults) and the detector model at hand, the gate never loads the
    HTTP server, the download code or ssl: about 6 MB of resident memory it would carry for nothing."""
    out = subprocess.run([sys.executable, "-c", DEMO, str(faces_dir), str(yunet_path)], capture_output=True,
                         text=True, check=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"rc": 0, "loaded": []}, out.stderr[-2000:]
