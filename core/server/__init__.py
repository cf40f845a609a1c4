"""The local OpenAI-compatible API (FastAPI on uvicorn), served from the app's own event loop."""
