"""Topic layout: everything an agent writes lives under ``<prefix>/<site>/<node>/``.

::

    <prefix>/<site>/<node>/status                      retained  node status (online/offline/stopped)
    <prefix>/<site>/<node>/<camera>/status             retained  camera status
    <prefix>/<site>/<node>/<camera>/health                       periodic health summary
    <prefix>/<site>/<node>/<camera>/events                       episode lifecycle new/update/end
    <prefix>/<site>/<node>/<camera>/frames/<event_id>            raw JPEG (content type image/jpeg)
    <prefix>/<site>/<node>/cmd/<name>                  (in)      commands to the agent
    <prefix>/<site>/<node>/cmd/<name>/response                   command responses

so a broker ACL can say "this agent writes below its node and reads only ``cmd/+``".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.errors import ConfigError

__all__ = [
    "COMMAND_NAMES", "RESERVED_CAMERA_IDS", "TOPIC_LEVEL", "ParsedTopic", "Topics", "acl_example",
    "reserved_camera_problem",
]

#: Commands the agent answers (cmd/<name>).
COMMAND_NAMES: tuple[str, ...] = ("snapshot", "set-thresholds", "reload-profile", "ping", "limits")
#: Camera ids that would collide with node-level topics.
RESERVED_CAMERA_IDS: frozenset[str] = frozenset({"status", "cmd"})
#: What one topic level (a site, node or camera id) may hold.
TOPIC_LEVEL = re.compile(r"^[A-Za-z0-9_.-]+$")


def reserved_camera_problem(camera_id: str) -> str | None:
    """Why ``camera_id`` cannot name a camera's topics (a node-level topic has that name), or None."""
    if camera_id not in RESERVED_CAMERA_IDS:
        return None
    names = ", ".join(sorted(RESERVED_CAMERA_IDS))
    return f"camera id {camera_id!r} is reserved for node-level MQTT topics ({names}): rename the camera"


def _check_level(value: str, what: str) -> str:
    if not TOPIC_LEVEL.match(value):
        raise ConfigError(
            f"{what} must be letters, digits, '_', '.', '-' to be a topic level, but got {value!r}"
        )
    return value


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    """A topic split into its parts (``camera`` is None for node-level topics)."""

    site: str
    node: str
    camera: str | None
    kind: str  # status | camera_status | health | events | frames | cmd | cmd_response | unknown
    name: str | None = None  # event id for frames, command name for cmd topics


@dataclass(frozen=True, slots=True)
class Topics:
    """Builds (and parses) the topics of one agent node."""

    prefix: str
    site: str
    node: str

    def __post_init__(self) -> None:
        for level in self.prefix.split("/"):
            _check_level(level, "topic prefix level")
        _check_level(self.site, "site")
        _check_level(self.node, "node")

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.site}/{self.node}"

    @property
    def node_status(self) -> str:
        return f"{self.base}/status"

    def _camera(self, camera_id: str) -> str:
        _check_level(camera_id, "camera id")
        if (problem := reserved_camera_problem(camera_id)) is not None:
            raise ConfigError(problem)
        return f"{self.base}/{camera_id}"

    def camera_status(self, camera_id: str) -> str:
        return f"{self._camera(camera_id)}/status"

    def health(self, camera_id: str) -> str:
        return f"{self._camera(camera_id)}/health"

    def events(self, camera_id: str) -> str:
        return f"{self._camera(camera_id)}/events"

    def frames(self, camera_id: str, event_id: str) -> str:
        return f"{self._camera(camera_id)}/frames/{_check_level(event_id, 'event id')}"

    def command(self, name: str) -> str:
        return f"{self.base}/cmd/{_check_level(name, 'command name')}"

    def command_response(self, name: str) -> str:
        return f"{self.command(name)}/response"

    @property
    def command_filter(self) -> str:
        """What the agent subscribes to: one level below cmd/, so its own responses never echo back."""
        return f"{self.base}/cmd/+"

    def parse(self, topic: str) -> ParsedTopic | None:
        """Split a topic below this prefix (any site/node); None when it is not one of ours."""
        head = self.prefix + "/"
        if not topic.startswith(head):
            return None
        parts = topic[len(head):].split("/")
        if len(parts) < 3:
            return None
        site, node, rest = parts[0], parts[1], parts[2:]
        if rest == ["status"]:
            return ParsedTopic(site, node, None, "status")
        if rest[0] == "cmd" and len(rest) in (2, 3):
            if len(rest) == 3 and rest[2] == "response":
                return ParsedTopic(site, node, None, "cmd_response", rest[1])
            if len(rest) == 2:
                return ParsedTopic(site, node, None, "cmd", rest[1])
            return ParsedTopic(site, node, None, "unknown")
        camera = rest[0]
        if rest[1:] == ["status"]:
            return ParsedTopic(site, node, camera, "camera_status")
        if rest[1:] in (["health"], ["events"]):
            return ParsedTopic(site, node, camera, rest[1])
        if len(rest) == 3 and rest[1] == "frames":
            return ParsedTopic(site, node, camera, "frames", rest[2])
        return ParsedTopic(site, node, camera, "unknown")


def acl_example(prefix: str = "edge-guard/v1", operator: str = "operator", viewer: str = "viewer") -> str:
    """A mosquitto ACL file: agents log in with user name = node name (pattern %u)."""
    p = prefix
    return f"""# edge-guard ACL for mosquitto (acl_file). Agents use their node name as user name.
# Agents: write only below their own node (never another node's, never a cmd/ request),
# read only their own cmd/+.
pattern write {p}/+/%u/status
pattern write {p}/+/%u/+/status
pattern write {p}/+/%u/+/health
pattern write {p}/+/%u/+/events
pattern write {p}/+/%u/+/frames/+
pattern write {p}/+/%u/cmd/+/response
pattern read {p}/+/%u/cmd/+

# Operators: read everything, send commands to any node.
user {operator}
topic read {p}/#
topic write {p}/+/+/cmd/+

# Viewers (dashboards, edge-guard tail): read only.
user {viewer}
topic read {p}/#
"""
