"""Build the MQTT sink from the whole config (what the daemon calls)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from agent.errors import ConfigError
from agent.sinks.mqtt.commands import CommandTarget
from agent.sinks.mqtt.identity import AgentIdentity
from agent.sinks.mqtt.sink import MqttSink

if TYPE_CHECKING:  # agent.config imports agent.sinks.mqtt.config: keep the runtime graph acyclic
    from agent.config import GuardConfig

__all__ = ["create_mqtt_sink"]


def create_mqtt_sink(
    cfg: GuardConfig,
    *,
    target: CommandTarget | None = None,
    ids: Callable[[], Mapping[str, str | None]] | None = None,
    backends: Mapping[str, str] | None = None,
) -> MqttSink:
    """A started :class:`MqttSink` for ``cfg.mqtt`` (ConfigError when it is not set).

    ``ids()`` returns the current ``model_sha256``/``profile_id``/``config_hash``;
    ``target`` (the daemon) answers commands; ``backends`` names the stats/model backends.
    """
    if cfg.mqtt is None:
        raise ConfigError("mqtt: expected a broker section to build the MQTT sink, but it is null")
    now = dict(ids()) if ids is not None else {}
    identity = AgentIdentity.create(
        cfg.site, cfg.mqtt.node or cfg.node, [cfg.camera_id],
        model_sha256=now.get("model_sha256"), profile_id=now.get("profile_id"),
        config_hash=now.get("config_hash"), backends=dict(backends or {}),
    )
    sink = MqttSink(cfg.mqtt, identity, ids=ids)
    if target is not None:
        sink.attach(target)
    return sink
