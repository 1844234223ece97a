"""The HTTP endpoint: an ASGI app (starlette) over the inference core, run by uvicorn."""
