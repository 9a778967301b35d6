"""What training reads from the environment, prefixed `SAE_` like the service's settings it shares folders with."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TrainingSettings(BaseSettings):
    # The same sources as the service's Settings, so that both agree on the folders they share.
    model_config = SettingsConfigDict(env_prefix="SAE_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("data"), description="folder holding <dataset>/ with the four IDX files")
    artifacts_dir: Path = Field(
        Path("artifacts"), description="where `sae-train train` writes checkpoints: the folder `sae-serve` loads"
    )
