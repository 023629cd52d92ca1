"""The wire contract of protocol 1.0: what the engine sends and takes, as pydantic models.

These models are the one definition of the protocol's shapes. docs/protocol.schema.json is generated from them
(`python -m breadboard_engine schema`), clients are checked against that file and against the golden corpus of real
engine output in engine/tests/golden, and the engine builds its answers through them.

Reading is lenient and writing is strict. A client decoding with these models keeps fields it does not know
(`extra="allow"`, re-encoded after the known ones) and passes event types it does not know through with their payload
as a plain object, so an engine that adds to protocol 1.0 does not break it. The engine itself goes through `emit`,
which refuses any field the models do not declare: a new field cannot reach the wire without reaching the schema.

Field order is the engine's wire order: `encode` of a decoded engine object gives back its bytes.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationInfo, create_model, field_validator
from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from .version import PROTOCOL_VERSION


class WireModel(BaseModel):
    model_config = ConfigDict(extra="allow")

    @classmethod
    def emit(cls, doc: dict) -> dict:
        """The engine's side: `doc` checked against this model (no undeclared field, anywhere) and returned as the
        JSON-ready dict to send, fields in the model's order, optional fields only when `doc` has them."""
        model = cls.model_validate(doc)
        extra = undeclared_fields(model)
        if extra:
            raise ValueError(f"{cls.__name__} has fields the protocol does not declare: {', '.join(extra)}")
        return model.wire()

    def wire(self) -> dict:
        return self.model_dump(mode="json", exclude_unset=True)


def undeclared_fields(model: BaseModel, prefix: str = "") -> list[str]:
    """Paths of the fields in `model` (and the models inside it) that its class does not declare."""
    found = [prefix + name for name in (model.model_extra or {})]
    for name in type(model).model_fields:
        value = getattr(model, name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, BaseModel):
                found += undeclared_fields(item, f"{prefix}{name}.")
    return found


def encode(model: BaseModel) -> bytes:
    """Compact JSON as the engine writes an event (and as the golden corpus stores every object)."""
    doc = model.model_dump(mode="json", exclude_unset=True)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


# -- event payloads ----------------------------------------------------------------------------------------------------
Reason = Annotated[
    str,
    Field(
        description="how the turn ended: `completed`, `replay` (a replay fixture finished), `error`, `stopped` "
        "(the `stop` command), `interrupted` (the engine stopped or died during the turn)"
    ),
]


class UserMessagePayload(WireModel):
    """`user_message`: the input that starts a turn."""

    text: str
    input_id: str | None = Field(
        default=None, description="the `input_id` the client sent with this input, so it can find its own turn"
    )


class TurnStartPayload(WireModel):
    """`turn_start`."""

    turn: int
    mode: str = Field(description="the provider that runs the turn: `echo`, `replay` or `openai`")


class AssistantDeltaPayload(WireModel):
    """`assistant_delta`: the next piece of the assistant's text, as it streams."""

    text: str
    message_id: str


class AssistantMessagePayload(WireModel):
    """`assistant_message`: the assistant's whole text, after its deltas."""

    text: str
    message_id: str
    source: str = Field(description="the provider that wrote it")
    model: str | None = Field(default=None, description="the model that wrote it (`openai`)")
    usage: dict[str, Any] | None = Field(default=None, description="token counts as the model's API reported them")
    worker_pid: int | None = Field(default=None, description="the process that ran the turn (a Ray worker)")


class TurnSummary(WireModel):
    completed: bool
    reason: Reason


class CompletionPayload(WireModel):
    """`completion`: the turn's outcome; always followed by `run_finished`."""

    summary: TurnSummary
    mode: str | None = Field(default=None, description="the provider that ran the turn (absent if it was cut off)")


class RunFinishedPayload(WireModel):
    """`run_finished`: the last event of every turn."""

    eventCount: int = Field(description="events of the turn, this one included (0 when the turn was cut off)")
    completed: bool
    reason: Reason
    logging_dir: str | None


class ErrorPayload(WireModel):
    """`error`: the turn failed; `completion` and `run_finished` follow with `completed: false`."""

    message: str
    reason: str | None = Field(default=None, description="`interrupted` when the engine stopped during the turn")


# The event types this engine emits and the payload each carries. A replay fixture may emit any other type: its
# payload is passed through as an object.
EVENT_PAYLOADS: dict[str, type[WireModel]] = {
    "user_message": UserMessagePayload,
    "turn_start": TurnStartPayload,
    "assistant_delta": AssistantDeltaPayload,
    "assistant_message": AssistantMessagePayload,
    "completion": CompletionPayload,
    "run_finished": RunFinishedPayload,
    "error": ErrorPayload,
}

# Built from a tuple, which `|` cannot do.
EventPayload = Union[(*EVENT_PAYLOADS.values(), dict[str, Any])]  # noqa: UP007


class Event(WireModel):
    """One event: an SSE `data:` line and a line of the session's event log. Decode the envelope, then its payload by
    `type` (`$defs/KnownEvent` pairs each known type with its payload); an unknown type's payload is a plain object."""

    id: str = Field(description="uuid of the event; also a resume point (`from_id`)")
    seq: int = Field(description="per session, from 1, one more per event, forever; the SSE `id:`")
    type: str
    session_id: str
    turn: int | None
    timestamp: int = Field(description="milliseconds since the Unix epoch")
    timestamp_ms: int = Field(description="the same as `timestamp`")
    protocol_version: str
    payload: EventPayload
    turn_id: str | None = Field(
        default=None,
        description="`<session_id>:turn:<turn>`: the turn this event belongs to, as upstream names it (absent on "
        "events stored before ordering metadata)",
    )
    step_id: int | None = Field(
        default=None,
        description="the event's index within its turn, from 0 (`user_message` 0, `turn_start` 1, the provider's "
        "events from 2 in the order the provider produced them, then `error`/`completion`/`run_finished`); with "
        "`turn` it orders and deduplicates a turn's events whatever order they arrived in",
    )

    @field_validator("payload", mode="plain")
    @classmethod
    def _payload_by_type(cls, value: Any, info: ValidationInfo) -> Any:
        model = EVENT_PAYLOADS.get(info.data.get("type"))
        if model is not None:
            return model.model_validate(value)
        if not isinstance(value, dict):
            raise ValueError("an event's payload is a JSON object")
        return value


def _known_event(kind: str, payload: type[WireModel]) -> type[Event]:
    name = payload.__name__.removesuffix("Payload") + "Event"
    return create_model(
        name, __base__=Event, __doc__=f"The `{kind}` event.", type=(Literal[kind], ...), payload=(payload, ...)
    )


KNOWN_EVENTS = [_known_event(kind, payload) for kind, payload in EVENT_PAYLOADS.items()]


class KnownEvent(RootModel[Annotated[Union[tuple(KNOWN_EVENTS)], Field(discriminator="type")]]):  # noqa: UP007
    """An event of a type this engine emits, tagged by `type`."""


# -- sessions ----------------------------------------------------------------------------------------------------------
SessionStatus = Annotated[
    str,
    Field(
        description="`starting`, `running` (a runner owns the session: working or waiting for input), `completed`, "
        "`failed`, `stopped` (closed: no more input), `interrupted` (the engine stopped while it was live; the next "
        "input resumes it)"
    ),
]


class CreateSessionRequest(WireModel):
    """`POST /v1/sessions`. `overrides`, `workspace`, `max_steps`, `permission_mode` and `stream` are upstream's,
    accepted and ignored."""

    task: str = Field(description="the first input; blank starts the session idle")
    config_path: str | None = None
    metadata: dict[str, Any] | None = Field(
        default=None,
        description='free-form; `cli_session_kind: "oneshot"` ends the session after its first turn; `model` and '
        "`mode`, when given, are strings",
    )
    provider: str | None = Field(default=None, description="`echo`, `openai` or `replay`; others are a 400")
    overrides: dict[str, Any] | None = None
    workspace: str | None = None
    max_steps: int | None = None
    permission_mode: str | None = None
    stream: bool = True

    @field_validator("metadata")
    @classmethod
    def _names_are_strings(cls, value: dict | None) -> dict | None:
        # The session summary reports them as strings: a number here would break every client listing sessions.
        for key in ("model", "mode"):
            if value and value.get(key) is not None and not isinstance(value[key], str):
                raise ValueError(f"metadata.{key} must be a string")
        return value


class CreateSessionResponse(WireModel):
    session_id: str
    status: SessionStatus
    created_at: str
    logging_dir: str | None


class SessionCompletionSummary(WireModel):
    """How the session's last turn ended."""

    completed: bool
    reason: Reason
    turn: int | None = None


class SessionSummary(WireModel):
    """`GET /v1/sessions/{id}`, and each item of `GET /v1/sessions` (oldest first)."""

    session_id: str
    status: SessionStatus
    created_at: str = Field(description="ISO 8601, UTC")
    last_activity_at: str
    updated_at: str
    model: str | None = Field(description="`metadata.model`")
    mode: str | None = Field(description="`metadata.mode`")
    provider: str | None = Field(description="the session's provider; null: the engine's default")
    completion_summary: SessionCompletionSummary | None
    reward_summary: dict[str, Any] | None
    logging_dir: str | None
    metadata: dict[str, Any]
    last_seq: int = Field(description="seq of the session's last event; 0 before its first")
    protocol_version: str
    config_hash: str | None


class SessionList(RootModel[list[SessionSummary]]):
    """`GET /v1/sessions`."""


class ConversationMessage(WireModel):
    turn: int | None
    role: str = Field(description="`user` (a `user_message`) or `assistant` (an `assistant_message`)")
    text: str
    seq: int = Field(description="the seq of the event it comes from")
    input_id: str | None = Field(default=None, description="`user`: the input's `input_id`, when it had one")
    message_id: str | None = Field(default=None, description="`assistant`: the message's id")


class TurnInProgress(WireModel):
    turn: int | None
    mode: str | None = Field(description="the provider running it")
    partial_text: str = Field(description="the assistant text streamed so far (empty once its message is whole)")
    started_seq: int = Field(description="the seq of its `turn_start`")


class SessionState(WireModel):
    """`GET /v1/sessions/{id}/state`, and the snapshot of a `session:<id>` bus topic. Everything from `last_seq` on
    is a pure function of the session's events up to `last_seq` (the same computed live, after a restart or after a
    crash); `status`, `provider`, `model` and `mode` are the session's as they are now, as in its summary."""

    session_id: str
    status: SessionStatus
    provider: str | None
    model: str | None
    mode: str | None
    last_seq: int = Field(description="the seq of the last event this state includes")
    turns: int = Field(description="turns begun")
    conversation: list[ConversationMessage] = Field(description="user and assistant messages, oldest first")
    turn_in_progress: TurnInProgress | None
    usage: dict[str, int] | None = Field(
        description="token counts summed over the turns whose model reported them (null: none did)"
    )
    last_turn: SessionCompletionSummary | None = Field(description="how the last finished turn ended")


class InputRequest(WireModel):
    """`POST /v1/sessions/{id}/input`."""

    content: str = Field(description="must not be blank (422)")
    attachments: list[str] | None = None
    input_id: str | None = Field(
        default=None,
        max_length=128,
        description="optional, chosen by the client (capability `sessions.input_id`): echoed in the answer and in "
        "the `user_message` that starts this input's turn",
    )

    @field_validator("content")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("content must not be blank")
        return value


class InputResponse(WireModel):
    status: str = Field(description="`accepted`")
    input_id: str | None = Field(default=None, description="the request's `input_id`, when it sent one")


class CommandRequest(WireModel):
    """`POST /v1/sessions/{id}/command`: `set_mode {mode}`, `set_model {model}`, `stop` (ends the running turn),
    `close` (ends the session for good and keeps its history: status `stopped`, further input is a 409)."""

    command: str
    payload: dict[str, Any] | None = None


class CommandDetail(WireModel):
    status: str = Field(description="`ok`")
    mode: str | None = Field(default=None, description="`set_mode`: the mode now set")
    model: str | None = Field(default=None, description="`set_model`: the model now set")
    stopped: bool | None = Field(
        default=None, description="`stop`, `close`: whether a turn was running (and is stopped)"
    )
    closed: bool | None = Field(
        default=None, description="`close`: whether this closed the session (false: it was closed already)"
    )


class CommandResponse(WireModel):
    status: str = Field(description="`accepted`")
    detail: CommandDetail


class ShutdownResponse(WireModel):
    """`POST /v1/shutdown`."""

    status: str = Field(description="`shutting_down`")
    pid: int


# -- identity and health -----------------------------------------------------------------------------------------------
ProtocolVersionField = Annotated[str, Field(description="exact string; this engine: see `$defs/ProtocolVersion`")]
StartedAt = Annotated[str, Field(description="ISO 8601, UTC, whole seconds")]
InstanceId = Annotated[str, Field(description="random per start unless a supervisor sets it")]


# The fields of Health after `status` are the engine's identity, which /ready and /status carry too.
class Health(WireModel):
    """`GET /health`: answers as soon as the port is open."""

    status: str = Field(description="`ok`")
    protocol_version: ProtocolVersionField
    version: str = Field(description="the same as `engine_version`")
    engine_version: str
    started_at: StartedAt
    started_at_unix: float
    pid: int
    instance_id: InstanceId


class RayStatus(WireModel):
    available: bool = Field(description="Ray is installed")
    initialized: bool
    state: str = Field(description="`pending`, `starting`, `connected`, `failed`, `stopped` or `off`")
    mode: str = Field(description="`local`, `cluster` or `off`")
    start: str = Field(description="`background`, `lazy` or `off`")
    address: str | None
    nodes: int
    temp_dir: str | None = None
    error: str | None = Field(default=None, description="why Ray failed (`state: failed`)")


class EventLogStatus(WireModel):
    enabled: bool
    dir: str
    sessions: int
    bytes: int
    fsync: str = Field(description="`always`, `turn` or `never`")


class SessionCounts(WireModel):
    total: int
    running: int = Field(description="in a turn now")
    live: int = Field(description="a runner is waiting for input or working")
    states_in_memory: int = Field(
        default=0,
        description="**ours**: sessions whose derived state is held in memory (at most `BREADBOARD_STATE_CACHE` of "
        "the idle ones)",
    )


def _identified(name: str, doc: str, before: dict, after: dict) -> type[WireModel]:
    """A model with the engine's identity (Health's fields after `status`) between `before` and `after`."""
    identity = {field: (info.annotation, info) for field, info in Health.model_fields.items() if field != "status"}
    return create_model(name, __base__=WireModel, __doc__=doc, **before, **identity, **after)


Ready = _identified("Ready", "`GET /ready`.", {"status": (str, ...), "ready": (bool, ...)}, {"ray": (RayStatus, ...)})
Status = _identified(
    "Status",
    "`GET /status` and `GET /v1/status`.",
    {"status": (str, ...), "uptime_s": (float, ...)},
    {"ray": (RayStatus, ...), "eventlog": (EventLogStatus, ...), "sessions": (SessionCounts, ...)},
)


class VersionInfo(WireModel):
    """`python -m breadboard_engine version --json`."""

    engine_version: str
    protocol_version: ProtocolVersionField
    capabilities: list[str] = Field(description="features a client may rely on beyond the protocol version")


# -- errors ------------------------------------------------------------------------------------------------------------
class ErrorBody(WireModel):
    """Every error answer."""

    error: str = Field(
        description="`unauthorized` (401), `not_found` (404), `conflict` (409), `invalid_request` (400, 422), "
        "`not_implemented` (501), `internal` (5xx), `resume_window_exceeded` (409, the event stream)"
    )
    detail: Any = Field(description='a message, or for a 422 `{"errors": [pydantic errors]}`')
    path: str | None


class ResumeWindowExceededBody(ErrorBody):
    """409 on the event stream: the resume point does not exist; reconnect without it."""

    error: Literal["resume_window_exceeded"]
    detail: str
    last_event_id: str
    last_seq: int


# -- the realtime bus (GET /v1/realtime, WebSocket) --------------------------------------------------------------------
Topics = Annotated[list[str], Field(description="`sessions` and/or `session:<id>`")]


class RealtimeSubscribe(WireModel):
    """Client to server: start topics; each answers with its `snapshot`, then `event`s."""

    type: Literal["subscribe"]
    topics: Topics


class RealtimeUnsubscribe(WireModel):
    type: Literal["unsubscribe"]
    topics: Topics


class RealtimePing(WireModel):
    """Answered by `pong` (with the same `id`, when it has one)."""

    type: Literal["ping"]
    id: str | int | None = None


class RealtimeClientMessage(
    RootModel[Annotated[Union[RealtimeSubscribe, RealtimeUnsubscribe, RealtimePing], Field(discriminator="type")]]  # noqa: UP007
):
    """A text frame a client sends on the bus: one JSON object."""


class SessionsSnapshot(WireModel):
    """The `sessions` topic's snapshot: every session's summary, oldest first."""

    type: Literal["snapshot"]
    topic: Literal["sessions"]
    payload: list[SessionSummary]


class SessionsChange(WireModel):
    kind: str = Field(
        description="`created`, `status` (its status changed), `deleted`, `activity` (new events; at most one per "
        "session per second, carrying the latest seq)"
    )
    session_id: str
    summary: SessionSummary | None = Field(default=None, description="`created`, `status`: the session now")
    last_seq: int | None = Field(default=None, description="`activity`: the session's last seq")
    last_activity_at: str | None = Field(default=None, description="`activity`: ISO 8601, UTC")


class SessionsEvent(WireModel):
    """An event of the `sessions` topic."""

    type: Literal["event"]
    topic: Literal["sessions"]
    payload: SessionsChange


class SessionSnapshot(WireModel):
    """A `session:<id>` topic's snapshot: its state at `payload.last_seq`; the topic's events follow from the next
    seq on, with no gap and none twice."""

    type: Literal["snapshot"]
    topic: str = Field(description="`session:<id>`")
    payload: SessionState


class SessionEvent(WireModel):
    """An event of a `session:<id>` topic: the event as the SSE stream and the log carry it."""

    type: Literal["event"]
    topic: str = Field(description="`session:<id>`")
    payload: Event


class RealtimeError(WireModel):
    """A request the server could not do (the connection stays open), or the last message before the server closes
    a connection that fell behind (close code 4008)."""

    type: Literal["error"]
    message: str
    topic: str | None = Field(default=None, description="the topic it is about")
    last_seq: dict[str, int] | None = Field(
        default=None,
        description="fell behind: the seq of the last event (or snapshot) sent on each `session:<id>` topic",
    )


class RealtimePong(WireModel):
    type: Literal["pong"]
    id: str | int | None = None


class RealtimeServerMessage(
    RootModel[
        Union[SessionsSnapshot, SessionsEvent, SessionSnapshot, SessionEvent, RealtimeError, RealtimePong]  # noqa: UP007
    ]
):
    """A text frame the server sends on the bus: one JSON object, told apart by `type` and `topic`."""


class ProtocolVersion(RootModel[Literal[PROTOCOL_VERSION]]):
    """The protocol this engine speaks, reported by /health, `version --json` and every event."""


# -- the schema document -----------------------------------------------------------------------------------------------
SCHEMA_MODELS: list[type[BaseModel]] = [
    ProtocolVersion,
    Event,
    KnownEvent,
    *EVENT_PAYLOADS.values(),
    CreateSessionRequest,
    CreateSessionResponse,
    SessionSummary,
    SessionList,
    InputRequest,
    InputResponse,
    CommandRequest,
    CommandResponse,
    ShutdownResponse,
    SessionState,
    RealtimeClientMessage,
    RealtimeServerMessage,
    Health,
    Ready,
    Status,
    VersionInfo,
    ErrorBody,
    ResumeWindowExceededBody,
]


class _Generator(GenerateJsonSchema):
    def field_title_should_be_set(self, schema) -> bool:
        return False  # a property's title only repeats its name


def json_schema() -> dict:
    """The JSON Schema (2020-12) of everything on the wire, as the engine serialises it."""
    _, doc = models_json_schema(
        [(model, "serialization") for model in SCHEMA_MODELS],
        ref_template="#/$defs/{model}",
        schema_generator=_Generator,
        title=f"BreadBoard engine protocol {PROTOCOL_VERSION}",
        description="Generated from breadboard_engine.protocol by `python -m breadboard_engine schema`; do not edit.",
    )
    defs = doc.pop("$defs")
    return {"$schema": GenerateJsonSchema.schema_dialect, **doc, "$defs": defs}


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
