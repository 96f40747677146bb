"""The wire between a student process and the grader: length-prefixed JSON headers and raw bytes.

Everything a student process sends reaches the grader through `Reader` and `check_frame`,
and nothing else: a header is JSON of a known message type whose fields have the types
they should, a name is one the grader expects, a tensor is a known dtype and a shape no
larger than a small multiple of the tensor it answers, and the bytes a process may send
in all are capped. Whatever breaks a rule is `Malformed`, which the grader turns into an
`error` for that submission. Nothing here ever unpickles or executes what it reads.

The other direction, grader to student process (the job, and each reference gradient
once the student has answered for it), is written with a deadline, so a process that
stops reading cannot stall the grader.
"""

from __future__ import annotations

import functools
import json
import math
import os
import select
import struct
import time

import torch

MAX_HEADER = 1 << 16
MAX_BYTES = 64 << 20  # bytes one student process may send in all
MAX_TEXT = 20_000  # characters of any text field
MAX_DIMS = 8
SIZE_FACTOR = 64  # an answer may hold this many times the elements of its tensor (a sum left out: n times)
SIZE_SLACK = 1 << 16  # and this many more


def dtype_name(dtype: torch.dtype) -> str:
    """A dtype as the wire names it: "float32"."""
    return str(dtype).removeprefix("torch.")


DTYPES = {
    dtype_name(dtype): dtype
    for dtype in (
        torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128,
        torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool,
    )
}


_NAMES = {dtype: name for name, dtype in DTYPES.items()}


class Malformed(ValueError):
    """A frame that breaks the wire's rules."""


def frame(header: dict, payload: bytes = b"") -> bytes:
    """One message as bytes: its header's length, the header (JSON), then its raw bytes."""
    if payload:
        header["nbytes"] = len(payload)
    data = json.dumps(header).encode()
    return struct.pack(">I", len(data)) + data + payload


def send_bytes(fd: int, data: bytes) -> None:
    """Write framed messages (blocking)."""
    buf = memoryview(data)
    while buf:
        written = os.write(fd, buf)
        buf = buf[written:]


def send(fd: int, header: dict, payload: bytes = b"") -> None:
    """Write one message (blocking): its header, and its raw bytes if it has any."""
    send_bytes(fd, frame(header, payload))


def send_by(fd: int, header: dict, payload: bytes = b"", deadline: float | None = None) -> None:
    """Write one message to a student process, giving up (`TimeoutError`) at the deadline; the
    descriptor must be non-blocking. A process that has gone away raises `BrokenPipeError`."""
    buf = memoryview(frame(header, payload))
    while buf:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise TimeoutError
        _, ready, _ = select.select([], [fd], [], remaining)
        if not ready:
            raise TimeoutError
        try:
            written = os.write(fd, buf)
        except BlockingIOError:
            continue
        buf = buf[written:]


def max_elements(numel: int) -> int:
    """The most elements an answer for a tensor of `numel` elements may carry over the wire."""
    return SIZE_FACTOR * numel + SIZE_SLACK


def encode_value(value: object, bound: int | None = None) -> tuple[dict, bytes]:
    """A student's value as a header and bytes: tensors as their raw data, anything else
    as a short description (a float is not a gradient tensor); so is a tensor of more than
    `bound` elements, which no gradient here can be."""
    if isinstance(value, torch.Tensor) and value.layout == torch.strided and not value.is_meta:
        if bound is not None and value.numel() > bound:
            return {"kind": "other", "description": f"a tensor of shape {tuple(value.shape)}, far too large"}, b""
        if value.dtype not in _NAMES:
            return {"kind": "other", "description": f"a tensor of dtype {value.dtype}"}, b""
        # (Each step returns the tensor itself when there is nothing to do; `tobytes` makes the one copy.)
        tensor = value.detach().cpu().resolve_conj().resolve_neg().contiguous()
        return (
            {"kind": "tensor", "dtype": _NAMES[tensor.dtype], "shape": list(tensor.shape)},
            tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"",
        )
    kind = type(value)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    article = "an" if name[:1].lower() in "aeiou" else "a"
    description = "None" if value is None else "`...`, the placeholder" if value is Ellipsis else f"{article} {name}"
    shape = getattr(value, "shape", None)
    if shape is not None and kind.__module__.startswith("numpy"):
        description += f" of shape {tuple(shape)}"
    return {"kind": "other", "description": description[:200]}, b""


def pack_tensors(tensors: list[tuple[int, str, torch.Tensor]]) -> tuple[dict, bytes]:
    """(run, name, tensor) items as one message (grader to student process): headers, then bytes."""
    headers, payloads = [], []
    for run, name, tensor in tensors:
        header, payload = encode_once(tensor)
        headers.append({"run": run, "name": name, "dtype": header["dtype"], "shape": header["shape"],
                        "size": len(payload)})
        payloads.append(payload)
    return {"t": "due", "tensors": headers}, b"".join(payloads)


@functools.lru_cache(maxsize=1024)
def encode_once(tensor: torch.Tensor) -> tuple[dict, bytes]:
    """A reference gradient's bytes, encoded once for every student process it goes to (the
    references are cached and never change; a tensor hashes by identity)."""
    return encode_value(tensor)


def unpack_tensors(header: dict, payload: bytes) -> dict[int, dict[str, torch.Tensor]]:
    """The tensors of a `pack_tensors` message (from the grader: trusted), by run and name."""
    out: dict[int, dict[str, torch.Tensor]] = {}
    offset = 0
    for item in header["tensors"]:
        out.setdefault(item["run"], {})[item["name"]] = decode_tensor(item, payload[offset: offset + item["size"]])
        offset += item["size"]
    return out


def _numel(shape) -> int:
    if not isinstance(shape, list) or len(shape) > MAX_DIMS:
        raise Malformed("a tensor's shape is not a short list")
    if not all(type(s) is int and 0 <= s for s in shape):
        raise Malformed("a tensor's shape holds something other than sizes")
    return math.prod(shape)


def decode_tensor(header: dict, payload: bytes) -> torch.Tensor:
    """Rebuild a tensor from the child's header and bytes, checking every field."""
    dtype = DTYPES.get(header.get("dtype")) if isinstance(header.get("dtype"), str) else None
    if dtype is None:
        raise Malformed("a tensor of an unknown dtype")
    numel = _numel(header.get("shape"))
    if numel * dtype.itemsize != len(payload):
        raise Malformed("a tensor's size does not match its data")
    if not payload:
        return torch.empty(header["shape"], dtype=dtype)
    return torch.frombuffer(bytearray(payload), dtype=dtype).reshape(header["shape"])


# Every message a student process may send: field -> accepted types. `None` in a tuple: may be null.
_INT, _STR, _OPT_INT, _OPT_STR = (int,), (str,), (int, type(None)), (str, type(None))
SCHEMAS: dict[str, dict[str, tuple]] = {
    "next": {"index": _INT},
    "answer": {"name": _STR, "line": _OPT_INT, "kind": _STR},
    "probe": {"name": _STR, "kind": _STR},
    "partial": {"name": _STR, "line": _INT, "kind": _STR},
    "error": {"names": (list,), "line": _OPT_INT, "message": _STR},
    "mutated": {"name": _STR, "line": _OPT_INT},
    "note": {"line": _OPT_INT, "message": _STR},
    "stop": {"message": _STR},
    "output": {"text": _STR},
    "done": {},
    "progress": {"step": _INT, "losses": (list,), "seconds": (int, float)},
    "param": {"name": _STR, "kind": _STR},
}
OPTIONAL = {"error": {"policy": _OPT_STR}, "stop": {"line": _OPT_INT, "cut": _STR}, "answer": {"description": _STR}}
TENSOR_FRAMES = {"answer", "probe", "param", "partial"}
_FIELDS = {kind: {**schema, **OPTIONAL.get(kind, {})} for kind, schema in SCHEMAS.items()}


def check_frame(header: dict, expected: dict[str, int]) -> int:
    """Validate one header from a student process against its message type; `expected` maps each
    name the grader accepts to its tensor's element count. Returns the payload size allowed."""
    kind = header.get("t")
    schema = SCHEMAS.get(kind) if isinstance(kind, str) else None
    if schema is None:
        raise Malformed("an unknown message")
    fields = _FIELDS[kind]
    if type(header.get("run", 0)) is not int:
        raise Malformed("a run that is not a number")
    for key, value in header.items():
        if key in ("t", "nbytes", "dtype", "shape", "run"):
            continue
        types = fields.get(key)
        if types is None or type(value) not in types:  # type(): a bool is not a line number
            raise Malformed(f"field {key!r} of a {kind!r} message")
        if type(value) is str and len(value) > MAX_TEXT:
            raise Malformed("a text field too long")
        if type(value) is int and not -1 <= value < 1 << 31:
            raise Malformed("a number out of range")
    for key in schema:
        if key not in header:
            raise Malformed(f"a {kind!r} message without {key!r}")
    if kind == "error" and not all(type(n) is str and n in expected for n in header["names"]):
        raise Malformed("an error for a name the grader did not ask for")
    if kind == "progress" and not all(type(x) in (int, float) for x in header["losses"]):
        raise Malformed("a loss that is not a number")
    if "name" in header and header["name"] not in expected:
        raise Malformed("a name the grader did not ask for")
    nbytes = header.get("nbytes", 0)
    if type(nbytes) is not int or nbytes < 0:
        raise Malformed("a payload size that is not a size")
    if kind in TENSOR_FRAMES and header["kind"] == "tensor":
        bound = max_elements(expected[header["name"]])
        numel = _numel(header.get("shape"))
        if any(size > bound for size in header["shape"]):
            raise Malformed("a tensor with an absurd size")
        dtype = DTYPES.get(header.get("dtype")) if isinstance(header.get("dtype"), str) else None
        if dtype is None or numel > bound:
            raise Malformed("a tensor of an unknown dtype or far too large")
        return numel * dtype.itemsize
    return 0


class Reader:
    """Reads framed messages until EOF or the deadline (`None`: no deadline), at most `limit`
    bytes in all. `messages(check)` validates each header with `check`, which returns the
    payload size it allows; without `check` (a student process reading its job from the
    grader), headers are trusted."""

    def __init__(self, fd: int, deadline: float | None, limit: int | None = MAX_BYTES):
        self.fd, self.deadline, self.limit, self.buffer = fd, deadline, limit, bytearray()
        self.idle: list = []  # the grader's own work, done while nothing has come (see `_fill`)
        self.total = 0

    def _fill(self, size: int) -> bool:
        while len(self.buffer) < size:
            remaining = None if self.deadline is None else self.deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError
            while self.idle and not select.select([self.fd], [], [], 0)[0]:
                task = self.idle.pop(0)
                try:
                    task()  # (its result is cached: should it fail, it fails again where it is needed)
                except Exception:  # noqa: BLE001
                    pass
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if not ready:
                raise TimeoutError
            chunk = os.read(self.fd, min(1 << 20, max(size - len(self.buffer), 1 << 16)))
            if not chunk:
                return False
            self.total += len(chunk)
            if self.limit is not None and self.total > self.limit:
                raise Malformed("more data than any answer needs")
            self.buffer += chunk
        return True

    def _take(self, size: int) -> bytes:
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def messages(self, check=None):
        while True:
            if not self._fill(4):
                return
            (length,) = struct.unpack(">I", self._take(4))
            if length > MAX_HEADER:
                raise Malformed("a header too long")
            if not self._fill(length):
                raise Malformed("a message cut short")
            try:
                header = json.loads(self._take(length))
            except (ValueError, RecursionError) as exc:
                raise Malformed("a header that is not JSON") from exc
            if not isinstance(header, dict):
                raise Malformed("a header that is not an object")
            allowed = check(header) if check is not None else header.get("nbytes", 0)
            nbytes = header.get("nbytes", 0)
            if type(nbytes) is not int or not 0 <= nbytes <= allowed:
                raise Malformed("a payload of the wrong size")
            if nbytes and not self._fill(nbytes):
                raise Malformed("a message cut short")
            yield header, self._take(nbytes)
