"""One small typed client per outside API, each over an injected aiohttp session."""
