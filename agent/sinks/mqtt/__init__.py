"""MQTT for fleets: topics, versioned schemas, store-and-forward spool, TLS and commands.

Import the parts directly (``agent.sinks.mqtt.sink.MqttSink``, ``...identity.AgentIdentity``,
``...commands.CommandTarget``): this package imports nothing on purpose, because
``agent.config`` imports ``agent.sinks.mqtt.config`` and the sink imports the pipeline types.
"""

__all__: list[str] = []
