"""The README's screenshot of a download in progress: the Models tab's download dialog fetching
the demo model (with 48 MiB of padding weights, so the transfer takes a few seconds) from the
loopback Hub of tests/hub_server.py, grabbed half-way. No network, no display needed:

    QT_QPA_PLATFORM=offscreen .venv/bin/python -m gui.screenshot_download \
        resources/screenshots/download.png
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path


def main(out: str) -> int:
    import numpy as np
    from PySide6.QtWidgets import QApplication
    from safetensors.numpy import save

    from core.facade import GIB, build_demo_model, load_catalog, profile_state
    from tests.hub_server import HubServer, Repo, repo_from_dir

    tmp = Path(tempfile.mkdtemp(prefix="vrampilot-download-shot-"))
    demo = build_demo_model(tmp / "demo", seed=0, name="demo-tiny-a")
    files = dict(repo_from_dir(demo, "8" * 40).files)
    files["model.safetensors"] = save({"pad": np.zeros(12 * 1024**2, dtype=np.float32)})
    hub = HubServer(rate=6_000_000).start()
    hub.repos["vrampilot-demo/demo-tiny-padded"] = Repo("8" * 40, files)
    os.environ.update(HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(tmp / "hf-cache"))

    from gui.download_dialog import DownloadDialog

    app = QApplication(sys.argv[:1])
    state = profile_state("rtx4090-laptop")
    dialog = DownloadDialog("vrampilot-demo/demo-tiny-padded", None, load_catalog(),
                            lambda: state, GIB)
    dialog.resize(760, 230)
    dialog.show()

    def spin(until: float, done: object) -> None:
        while time.monotonic() < until and not done():  # type: ignore[operator]
            app.processEvents()
            time.sleep(0.02)

    spin(time.monotonic() + 30, dialog.download_button.isEnabled)
    dialog.start_download()
    spin(time.monotonic() + 60, lambda: dialog.bar.value() >= 400)
    spin(time.monotonic() + 1.0, lambda: False)  # a rate over more than one chunk
    dialog.grab().save(out)
    dialog.cancel()
    spin(time.monotonic() + 30, lambda: not dialog.busy)
    dialog.close()
    hub.stop()
    sys.stderr.write(f"wrote {out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "download.png"))
