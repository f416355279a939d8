"""A corpus of hostile requests for every RPC of the six services, and a runner for it.

``hostile_corpus(seed)`` is deterministic (a seeded ``random.Random``): the same seed gives
the same ``(method, bytes)`` list. It is built from the services' descriptors, so a new RPC
or field is covered without editing this file:

- random bytes, and valid requests truncated at random points;
- wire-level damage: wire types 6 and 7, field number 0, an 11-byte varint, a length past
  the end, an open group, invalid UTF-8 in a string, a known field sent with the wrong wire type;
- every field of every request (and of the messages inside it, to depth 3) set in turn to
  hostile values: 4 MB strings (top levels), ids with odd unicode (bidi overrides, NUL,
  zero-width, emoji, combining marks), huge and negative numbers, NaN and infinities,
  unknown enum values, 100k repeated entries; and bad page tokens;
- a few messages over the server's 4 MiB receive limit.

``run_corpus(channel, corpus, metadata=...)`` sends each entry as raw bytes (no client-side
validation) and returns one ``Outcome`` per entry with its status code. It takes any channel
(a TLS channel, auth metadata) so the same corpus can be run against a secured server.
"""

from __future__ import annotations

import base64
import contextlib
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

from grid_scheduler._proto.v1 import agent_pb2, audit_pb2, placement_pb2, policy_pb2, scenario_pb2, topology_pb2

SERVICES = [
    placement_pb2.DESCRIPTOR.services_by_name["PlacementService"],
    topology_pb2.DESCRIPTOR.services_by_name["TopologyService"],
    scenario_pb2.DESCRIPTOR.services_by_name["ScenarioService"],
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"],
    policy_pb2.DESCRIPTOR.services_by_name["PolicyService"],
    agent_pb2.DESCRIPTOR.services_by_name["SiteAgentService"],
]


@dataclass(frozen=True)
class Method:
    path: str  # "/package.Service/Method"
    request: type[Message]
    server_streaming: bool


def _method(service_name: str, method: MethodDescriptor) -> Method:
    cls = message_factory.GetMessageClass(method.input_type)
    return Method(f"/{service_name}/{method.name}", cls, method.server_streaming)


METHODS: dict[str, Method] = {
    m.path: m for service in SERVICES for m in (_method(service.full_name, x) for x in service.methods)
}

# Plausible requests whose fields the corpus damages one at a time. None names an existing
# pool, job or scenario run, so a request that is refused cannot have touched anything; a
# damaged SubmitJob may still be a valid job (an odd but legal name), and is then accepted.
_TRAINING = {"name": "hostile", "tenant": "acme", "kind": 1, "gpus": {"count": 8, "types": ["GB300"]},
             "residency": {"allowed": ["EU"]}, "training": {"duration_hours": 2, "datasets": []}}
_INFERENCE = {"name": "hostile-inf", "tenant": "acme", "kind": 2, "gpus": {"count": 1},
              "inference": {"replicas": 1, "demand": [{"endpoint": "london", "weight": 1}], "latency_slo_ms": 50}}
_BASELINES: dict[str, list[dict[str, Any]]] = {
    "SubmitJob": [{"spec": _TRAINING, "request_id": "hostile-1", "view": 2}, {"spec": _INFERENCE}],
    "ExplainPlacement": [{"spec": _TRAINING}, {"spec": _INFERENCE}],
    "GetJob": [{"id": "job-no-such", "view": 2}],
    "ListJobs": [{"page_size": 5, "states": [1, 2]}],
    "CancelJob": [{"id": "job-no-such"}],
    "CompleteJob": [{"id": "job-no-such"}],
    "WatchJobs": [{"job_id": "job-no-such", "after_sequence": 1}],
    "OptimizePending": [{"dry_run": True, "time_limit_s": 0.2}],
    "ListSites": [{"tier": 1, "jurisdiction": "EU"}],
    "GetSite": [{"id": "no-such-site"}],
    "DrainPool": [{"pool_id": "no-such-pool"}],
    "UndrainPool": [{"pool_id": "no-such-pool"}],
    "StartScenario": [{"yaml": "name: hostile\n", "request_id": "r"}, {"path": "no/such/file.yaml"}],
    "GetScenario": [{"id": "scn-no-such"}],
    "WatchScenario": [{"id": "scn-no-such"}],
    "GetScenarioReport": [{"id": "scn-no-such", "include_content": True}],
    "CancelScenario": [{"id": "scn-no-such"}],
    "DeleteScenario": [{"id": "scn-no-such"}],
    "ListAuditRecords": [{"after_sequence": 0, "page_size": 10, "tenant": "acme"}],
    # A stale expected version (ABORTED) and a version that does not exist: refused, nothing applied.
    "GetPolicy": [{"version": 0}, {"version": 999}],
    "ListPolicyVersions": [{"page_size": 5}],
    "ValidatePolicy": [{"document": {"yaml": "weights: {carbon: 2.0}\n"}}],
    "DiffPolicy": [{"document": {"yaml": "weights: {carbon: 2.0}\n"}, "last_finished": 5}],
    "ApplyPolicy": [{"document": {"yaml": "weights: {carbon: 2.0}\n"}, "expected_version": 999, "reason": "r"}],
    "RollbackPolicy": [{"version": 999, "reason": "r"}],
    "GetQuotaUsage": [{"tenant": "acme"}, {"tenant": ""}],
}

ODD_UNICODE = [
    "\u202ejob-evil\u202c",  # right-to-left override
    "job\x00nul",
    "\u200b\u200d\ufeff",  # zero-width and BOM
    "\U0001f600" * 300,  # emoji past the id bound
    "e\u0301" * 100,  # combining marks
    "\U0010ffff\ufffe",
    "../../../../etc/passwd",
    "%s%n{0}${x}\\'\"",
    "scn-" + "\u0663" * 16,  # Arabic-Indic digits
    " ",
]
HUGE_STRING = "A" * 4_000_000  # under the 4 MiB receive limit with the rest of the message
INTS32 = [-1, -(2**31), 2**31 - 1, 1_000_000_000]
INTS64 = [-1, -(2**63), 2**63 - 1, 10**15]
FLOATS = [float("nan"), float("inf"), float("-inf"), 1e308, -1e308, -0.0, 5e-324, -1.0]
ENUMS = [99, -1, 2**31 - 1]
MANY = 100_000
OVERSIZED = {"SubmitJob", "GetJob", "WatchJobs", "DrainPool", "StartScenario"}


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(number: int, wire: int) -> bytes:
    return _varint((number << 3) | wire)


def _wire_type(field: Any) -> int:
    if field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES, FieldDescriptor.TYPE_MESSAGE):
        return 2
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64):
        return 1
    if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_SFIXED32):
        return 5
    return 0


def _wrong_value(field: Any) -> bytes:
    """A field's number with a wire type it does not have, and a value of that wire type."""
    right = _wire_type(field)
    if right == 2:
        return _tag(field.number, 0) + _varint(2**40)
    if right == 0:
        return _tag(field.number, 2) + _varint(3) + b"\xff\xfe\x00"
    return _tag(field.number, 0) + _varint(7)


def _is_repeated(field: Any) -> bool:
    repeated = getattr(field, "is_repeated", None)  # protobuf >= 6 (label is deprecated there)
    if repeated is not None:
        return bool(repeated)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


def _values(field: Any, huge: bool, rng: random.Random) -> Iterator[tuple[str, Any]]:
    """(label, value) of hostile values for one (scalar) field."""
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        for i, text in enumerate(ODD_UNICODE):
            yield f"unicode{i}", text
        yield "long257", "x" * 257
        if huge:
            yield "4MB", HUGE_STRING
    elif t == FieldDescriptor.TYPE_BYTES:
        yield "bytes", bytes(rng.randrange(256) for _ in range(64))
    elif t == FieldDescriptor.TYPE_ENUM:
        for v in ENUMS:
            yield f"enum{v}", v
    elif t == FieldDescriptor.TYPE_BOOL:
        yield "true", True
    elif t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        for x in FLOATS:
            yield f"float{x!r}", x
    elif t in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
        for v in INTS64:
            yield f"int{v}", v
    elif t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
        for v in INTS32:
            yield f"int{v}", v


def _many(field: Any) -> Any:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return ["x"] * MANY
    if t == FieldDescriptor.TYPE_ENUM:
        return [1] * MANY
    if t == FieldDescriptor.TYPE_MESSAGE:
        return None  # built by the caller
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return [1.0] * MANY
    if t == FieldDescriptor.TYPE_BOOL:
        return [True] * MANY
    return [1] * MANY


def _mutations(
    base: Message, rng: random.Random, depth: int = 0, prefix: str = "", huge: bool = True
) -> Iterator[tuple[str, Message]]:
    """Copies of ``base`` with one field (at any depth up to 3) set to a hostile value.

    ``huge``: also 4 MB strings, in fields at depth 0 and 1 (they cost the test time, not coverage).
    """
    huge = huge and depth <= 1
    descriptor: Any = base.DESCRIPTOR
    for field in descriptor.fields:
        path = prefix + field.name
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                # A map (e.g. a policy's tenant rules): 100k keys, each with an empty value.
                many = base.__class__()
                many.CopyFrom(base)
                target = getattr(many, field.name)
                value_field = field.message_type.fields_by_name["value"]
                for i in range(MANY):
                    if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                        target[f"k{i}"].SetInParent()
                    else:
                        target[f"k{i}"] = value_field.default_value
                yield f"{path}{{x{MANY}}}", many
                continue
            if _is_repeated(field):
                existing = getattr(base, field.name)
                element = existing[0] if len(existing) else message_factory.GetMessageClass(field.message_type)()
                many = base.__class__()
                many.CopyFrom(base)
                target = getattr(many, field.name)
                del target[:]
                target.extend([element] * MANY)
                yield f"{path}[x{MANY}]", many
                if depth < 3:
                    for label, inner in _mutations(element, rng, depth + 1, f"{path}[0].", huge):
                        copy = base.__class__()
                        copy.CopyFrom(base)
                        target = getattr(copy, field.name)
                        del target[:]
                        target.append(inner)
                        yield label, copy
            elif depth < 3:
                inner_base = getattr(base, field.name)
                for label, inner in _mutations(inner_base, rng, depth + 1, path + ".", huge):
                    copy = base.__class__()
                    copy.CopyFrom(base)
                    getattr(copy, field.name).CopyFrom(inner)
                    yield label, copy
            continue
        if _is_repeated(field):
            copy = base.__class__()
            copy.CopyFrom(base)
            getattr(copy, field.name).extend(_many(field))
            yield f"{path}[x{MANY}]", copy
            for label, value in _values(field, False, rng):
                copy = base.__class__()
                copy.CopyFrom(base)
                target = getattr(copy, field.name)
                del target[:]
                target.append(value)
                yield f"{path}[0]={label}", copy
            continue
        for label, value in _values(field, huge, rng):
            copy = base.__class__()
            copy.CopyFrom(base)
            setattr(copy, field.name, value)
            yield f"{path}={label}", copy


def _page_tokens() -> list[str]:
    b64 = base64.urlsafe_b64encode
    return [
        "!!!not-base64!!!", "====", b64(b"after:").decode(), b64(b"before:job-1").decode(),
        b64(b"\xff\xfe\xfd").decode(), b64(("after:" + "\u202e" * 40).encode()).decode(),
        b64(b"after:\x00\x00").decode(), "YWZ0ZXI6", "\U0001f600", "a" * 300,
    ]


def _wire_damage(method: Method, valid: bytes, rng: random.Random) -> Iterator[tuple[str, bytes]]:
    yield "wire-type-7", b"\x0f\x01\x02"
    yield "wire-type-6", b"\x0e"
    yield "field-0", b"\x00\x01"
    yield "varint-overflow", b"\x08" + b"\xff" * 11
    yield "length-past-end", b"\x0a\xff\xff\x03abc"
    yield "open-group", b"\x0b"
    yield "end-group", b"\x0c"
    for field in method.request.DESCRIPTOR.fields:
        yield f"wrong-wire:{field.name}", valid + _wrong_value(field)
        if field.type == FieldDescriptor.TYPE_STRING:
            yield f"bad-utf8:{field.name}", _tag(field.number, 2) + _varint(4) + b"\xc3\x28\xa0\xa1"
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            yield f"bad-nested:{field.name}", _tag(field.number, 2) + _varint(3) + b"\x0f\x01\x02"
    for i in range(3):
        cut = rng.randrange(1, len(valid)) if len(valid) > 1 else 0
        yield f"truncated{i}@{cut}", valid[:cut]


def hostile_corpus_labelled(seed: int = 0) -> list[tuple[str, bytes, str]]:
    """(method path, request bytes, what the bytes are) for every RPC; deterministic in ``seed``."""
    rng = random.Random(seed)
    corpus: list[tuple[str, bytes, str]] = []
    for path, method in METHODS.items():
        name = path.rsplit("/", 1)[1]
        bases = [method.request(**kwargs) for kwargs in _BASELINES.get(name, [{}])]
        valid = bases[0].SerializeToString()
        for i in range(6):
            size = rng.choice([0, 1, 2, 3, 5, 8, 16, 64, 256])
            corpus.append((path, bytes(rng.randrange(256) for _ in range(size)), f"random{i}"))
        for label, data in _wire_damage(method, valid, rng):
            corpus.append((path, data, label))
        for b, base in enumerate(bases):
            for label, message in _mutations(base, rng, huge=b == 0):
                corpus.append((path, message.SerializeToString(), f"base{b}:{label}"))
        if "page_token" in method.request.DESCRIPTOR.fields_by_name:
            for token in _page_tokens():
                corpus.append((path, method.request(page_token=token).SerializeToString(), f"page_token={token[:20]}"))
        if name in OVERSIZED:  # over the 4 MiB receive limit: refused by grpcio before it is parsed
            corpus.append((path, _tag(15, 2) + _varint(5 * 1024 * 1024) + b"z" * (5 * 1024 * 1024), "over-4MiB"))
    return corpus


def hostile_corpus(seed: int = 0) -> list[tuple[str, bytes]]:
    """(method path, request bytes) for every RPC of PlacementService, TopologyService and ScenarioService."""
    return [(method, data) for method, data, _ in hostile_corpus_labelled(seed)]


@dataclass(frozen=True)
class Outcome:
    method: str
    label: str
    code: grpc.StatusCode
    details: str
    changed: bool | None  # did ``observe`` see a change across the call (None: not observed)
    status_bytes: int = 0  # size of the google.rpc.Status the server sent (grpc-status-details-bin)

    @property
    def refused(self) -> bool:
        """The server said no. DEADLINE_EXCEEDED is no answer (a watch left open), so not a refusal."""
        return self.code not in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED)


def run_corpus(
    channel: grpc.Channel,
    corpus: Sequence[tuple[str, bytes] | tuple[str, bytes, str]],
    metadata: Sequence[tuple[str, str]] = (),
    timeout_s: float = 30.0,
    stream_timeout_s: float = 0.5,
    observe: Callable[[], object] | None = None,
) -> list[Outcome]:
    """Send every entry as raw bytes on ``channel`` (with ``metadata``); one Outcome each, in order.

    A server-streaming call counts as OK once its first message arrives (the stream is then
    cancelled); one left open with nothing to send ends in DEADLINE_EXCEEDED after
    ``stream_timeout_s``. ``observe``, if given, is called before and after every call.
    """
    outcomes = []
    for entry in corpus:
        path, data = entry[0], entry[1]
        label = entry[2] if len(entry) > 2 else ""
        method = METHODS.get(path)
        before = observe() if observe is not None else None
        code, details, status_bytes = grpc.StatusCode.OK, "", 0
        try:
            if method is not None and method.server_streaming:
                call = channel.unary_stream(path, request_serializer=None, response_deserializer=None)
                # A big request takes a while to send: its deadline must not expire on the way.
                responses = call(data, timeout=stream_timeout_s + len(data) / 1e6, metadata=list(metadata))
                with contextlib.suppress(StopIteration):
                    next(responses)
                responses.cancel()
            else:
                unary = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
                unary(data, timeout=timeout_s, metadata=list(metadata))
        except grpc.RpcError as e:
            code, details = e.code(), e.details() or ""
            trailers = e.trailing_metadata() or ()
            status_bytes = sum(len(v) for k, v in trailers if k == "grpc-status-details-bin")
        changed = None if observe is None else observe() != before
        outcomes.append(Outcome(path, str(label), code, details[:300], changed, status_bytes))
    return outcomes
