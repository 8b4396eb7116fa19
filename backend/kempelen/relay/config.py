"""The relay's settings: one object, read from KEMPELEN_* environment variables.

Unsafe defaults (anvil's public dev keys, the built-in session secret) are refused
outside `environment == "development"`, so a production relay cannot start with them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kempelen.chain.anvil import dev_keys

DEFAULT_SESSION_SECRET = "kempelen-development-session-secret"


def _home() -> Path:
    return Path.home() / ".kempelen"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KEMPELEN_", extra="ignore")

    environment: Literal["development", "production"] = "development"
    rpc_url: str = "http://127.0.0.1:8545"
    database_url: str = Field(default_factory=lambda: f"sqlite:///{_home() / 'relay.sqlite'}")
    store_dir: Path = Field(default_factory=lambda: _home() / "store")
    relayer_key: SecretStr | None = None
    session_secret: SecretStr = SecretStr(DEFAULT_SESSION_SECRET)
    session_seconds: int = Field(default=24 * 3600, gt=0)
    # Domain a Sign-In with Ethereum message must name (EIP-4361 phishing protection).
    siwe_domain: str = "localhost"
    siwe_nonce_seconds: int = Field(default=600, gt=0)

    max_payload_bytes: int = Field(default=262_144, gt=0, le=262_144)  # one IPFS block
    max_upload_bytes: int = Field(default=16 * 1024 * 1024, gt=0)  # task payloads, manifests
    answers_per_address_per_s: float = Field(default=20.0, gt=0)
    answers_burst: int = Field(default=40, gt=0)
    lease_seconds: int = Field(default=600, gt=0)  # when the manifest does not say
    batch_cache_seconds: float = Field(default=5.0, ge=0)
    # Group commit: the intake writer commits whatever arrived within this window at once.
    commit_window_ms: float = Field(default=2.0, ge=0)
    commit_max_answers: int = Field(default=256, gt=0)
    # Settlement-mode batches: answers are held until the manifest's fallbackAt, but never later
    # than this long before the batch's deadline, so the direct path still has time (the safety valve).
    settlement_margin_seconds: int = Field(default=3600, ge=0)

    @model_validator(mode="after")
    def _refuse_unsafe_defaults(self) -> Settings:
        if self.environment == "development":
            return self
        if self.session_secret.get_secret_value() == DEFAULT_SESSION_SECRET:
            raise ValueError("set KEMPELEN_SESSION_SECRET: the default is public (development only)")
        if self.relayer_key is not None:
            key = self.relayer_key.get_secret_value().lower().removeprefix("0x")
            if key in {k.removeprefix("0x") for k in dev_keys(10)}:
                raise ValueError("KEMPELEN_RELAYER_KEY is one of anvil's public dev keys "
                                 "(allowed only with KEMPELEN_ENVIRONMENT=development)")
        return self
