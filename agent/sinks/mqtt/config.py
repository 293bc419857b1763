"""Config of the MQTT publisher (issue 3 fills this in)."""

from __future__ import annotations

from pydantic import Field

from agent.configbase import StrictModel

__all__ = ["MqttConfig"]


class MqttConfig(StrictModel):
    host: str = Field(min_length=1, description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is usual for TLS).")
    prefix: str = Field("edge-guard/v1", min_length=1, description="Topic prefix.")
