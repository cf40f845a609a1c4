"""`vrampilot doctor`: what the app needs on this machine, what it found, and the fix for each gap.

Each check is a small function returning a ``Check`` (report.py); checklist.py runs them in order.
Qt is probed through files and ``ldd`` only (core stays Qt-free), vLLM and torch in a subprocess.
"""

from core.doctor.checklist import DoctorOptions, run_checklist
from core.doctor.report import Check, Report, Status

__all__ = ["Check", "DoctorOptions", "Report", "Status", "run_checklist"]
