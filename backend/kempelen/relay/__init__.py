"""The relay: FastAPI intake of signed answers, content pinning, on-chain submission."""
