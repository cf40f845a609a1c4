"""Single active model: switch planning and execution, memory wait, alert reactions.

Import the modules themselves (front ends: core.facade); the package imports nothing, so
core.history_store can use core.manager.events without a cycle.
"""
