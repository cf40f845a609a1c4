"""vrampilot's servers: the per-user control endpoint (Unix socket) and its routes, and the local
OpenAI-compatible API (FastAPI on uvicorn), both served from the owner's own event loop."""
