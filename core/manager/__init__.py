"""Single active model: switch planning and execution, memory wait, alert reactions."""

from core.manager.events import SwitchEvent, SwitchPhase
from core.manager.manager import ManagerState, ModelManager, SwitchResult
from core.manager.memory_wait import GpuSnapshotProbe, HostMemoryProbe, MemoryProbe
from core.manager.plan import DeviceReading, FitEstimate, SafetyLimits, SwitchPlan, plan_switch

__all__ = [
    "DeviceReading", "FitEstimate", "GpuSnapshotProbe", "HostMemoryProbe", "ManagerState",
    "MemoryProbe", "ModelManager", "SafetyLimits", "SwitchEvent", "SwitchPhase", "SwitchPlan",
    "SwitchResult", "plan_switch",
]
