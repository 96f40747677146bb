"""The wire between a student process and the grader: length-prefixed JSON headers and raw bytes.

Nothing here ever unpickles or executes what it reads: a header is JSON, a tensor is
its dtype, shape and bytes, each field checked before use, and sizes are bounded.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time

import torch

MAX_HEADER = 1 << 16
MAX_PAYLOAD = 1 << 28

DTYPES = {
    str(dtype).removeprefix("torch."): dtype
    for dtype in (
        torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128,
        torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool,
    )
}


def send(fd: int, header: dict, payload: bytes = b"") -> None:
    """Write one message: its header, and its raw bytes if it has any."""
    if payload:
        header["nbytes"] = len(payload)
    data = json.dumps(header).encode()
    buf = struct.pack(">I", len(data)) + data + payload
    while buf:
        written = os.write(fd, buf)
        buf = buf[written:]


def encode_value(value: object) -> tuple[dict, bytes]:
    """A student's value as a header and bytes: tensors as their raw data, anything else
    as a short description (a float is not a gradient tensor)."""
    if isinstance(value, torch.Tensor) and value.layout == torch.strided and not value.is_meta:
        tensor = value.detach().cpu().clone(memory_format=torch.contiguous_format)
        return (
            {"kind": "tensor", "dtype": str(tensor.dtype).removeprefix("torch."), "shape": list(tensor.shape)},
            tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"",
        )
    kind = type(value)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    description = "None" if value is None else f"a {name}"
    shape = getattr(value, "shape", None)
    if shape is not None and kind.__module__.startswith("numpy"):
        description += f" of shape {tuple(shape)}"
    return {"kind": "other", "description": description}, b""


def decode_tensor(header: dict, payload: bytes) -> torch.Tensor:
    """Rebuild a tensor from the child's header and bytes, checking every field."""
    dtype = DTYPES.get(header.get("dtype"))
    shape = header.get("shape")
    if dtype is None or not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise ValueError("malformed tensor header")
    numel = 1
    for s in shape:
        numel *= s
    if numel * torch.empty((), dtype=dtype).element_size() != len(payload):
        raise ValueError("tensor size does not match its data")
    if not payload:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(bytearray(payload), dtype=dtype).reshape(shape)


class Reader:
    """Reads framed messages from the child until EOF or the deadline."""

    def __init__(self, fd: int, deadline: float):
        self.fd, self.deadline, self.buffer = fd, deadline, bytearray()

    def _fill(self, size: int) -> bool:
        while len(self.buffer) < size:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if not ready:
                raise TimeoutError
            chunk = os.read(self.fd, 1 << 20)
            if not chunk:
                return False
            self.buffer += chunk
        return True

    def _take(self, size: int) -> bytes:
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def messages(self):
        while True:
            if not self._fill(4):
                return
            (length,) = struct.unpack(">I", self._take(4))
            if length > MAX_HEADER or not self._fill(length):
                raise ValueError("malformed message")
            header = json.loads(self._take(length))
            if not isinstance(header, dict):
                raise ValueError("malformed message")
            nbytes = header.get("nbytes", 0)
            if not isinstance(nbytes, int) or not 0 <= nbytes <= MAX_PAYLOAD or not self._fill(nbytes):
                raise ValueError("malformed message")
            yield header, self._take(nbytes)


