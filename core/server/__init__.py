"""vrampilot's servers: the per-user control endpoint (Unix socket) and its routes."""
