"""DWPose frames saved as pickled .npy files (``np.save(path, pose_dict)``), read without unpickling.

A pickled .npy may call any Python function while it is unpickled, so training never loads one
(np.load(allow_pickle=False)); `scripts/prepare_dataset.py --convert_keypoints` turns a dataset's DWPose
folders into keypoint .npz files once, reading each frame with `read_dwpose_npy`. That reader is not an
unpickler: it walks the pickle's opcodes (pickletools.genops decodes them, executing nothing) and builds the
dicts, lists, tuples, numbers, strings and NumPy arrays they describe itself, arrays from their raw bytes. A
global other than the few NumPy names that describe arrays, or an opcode outside that data subset, makes
the file unreadable; nothing a file names is ever imported or called.
"""

from __future__ import annotations

import pickletools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.lib import format as npy_format

from iasa.pose.keypoints import KeypointFileError

# The names pickles of arrays, dtypes and scalars use (numpy 1.x: numpy.core, 2.x: numpy._core; _frombuffer:
# protocol 5 arrays; np.save writes protocol 3). They are read as names, never imported.
_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")
_ALLOWED_GLOBALS = (
    {(module, name) for module in _MULTIARRAY for name in ("_reconstruct", "scalar")}
    | {(module, "_frombuffer") for module in _NUMERIC}
    | {("numpy", "ndarray"), ("numpy", "dtype")}
)
_PUSH_CONSTANT = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False, "EMPTY_TUPLE": ()}
_PUSH_ARGUMENT = {
    "BININT", "BININT1", "BININT2", "LONG1", "LONG4", "BINFLOAT", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8",
    "SHORT_BINBYTES", "BINBYTES", "BINBYTES8", "BYTEARRAY8",
}  # fmt: skip
_NO_EFFECT = {"PROTO", "FRAME"}


class RefusedPickle(ValueError):
    """The pickle holds more than DWPose data."""


@dataclass(frozen=True)
class _Global:
    module: str
    name: str


class _Pending:
    """An array or dtype whose REDUCE was read and whose BUILD (its state) has not come yet."""

    def __init__(self, kind: str, args: tuple) -> None:
        self.kind, self.args, self.value = kind, args, None


def _resolve(item: Any) -> Any:
    """The finished value: pending arrays and dtypes replaced by what their BUILD made, inside containers too."""
    if isinstance(item, _Pending):
        if item.value is None:
            raise RefusedPickle(f"a {item.kind} without its state")
        return item.value
    if isinstance(item, dict):
        return {_resolve(key): _resolve(value) for key, value in item.items()}
    if isinstance(item, list):
        return [_resolve(value) for value in item]
    if isinstance(item, tuple):
        return tuple(_resolve(value) for value in item)
    return item


def _reduce(function: Any, args: Any) -> Any:
    if not isinstance(function, _Global) or not isinstance(args, tuple):
        raise RefusedPickle("a call of something other than a NumPy array constructor")
    if function.name == "_reconstruct":
        return _Pending("array", args)
    if function.name == "dtype":
        return _Pending("dtype", args)
    if function.name == "scalar":  # scalar(dtype, raw bytes) of a numeric dtype
        dtype, raw = _resolve(args[0]), args[1]
        if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(raw, bytes):
            raise RefusedPickle("a NumPy scalar that is not a plain number")
        return np.frombuffer(raw, dtype=dtype)[0]
    if function.name == "_frombuffer":  # _frombuffer(raw bytes, dtype, shape, order) of a numeric array
        raw, dtype, shape, order = args[0], _resolve(args[1]), args[2], args[3]
        if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(raw, (bytes, bytearray)):
            raise RefusedPickle("an array buffer that is not plain numbers")
        return np.frombuffer(bytes(raw), dtype=dtype).reshape(shape, order=order).copy()
    raise RefusedPickle(f"a call of {function.module}.{function.name}")


def _build(target: Any, state: Any) -> None:
    if not isinstance(target, _Pending) or target.value is not None:
        raise RefusedPickle("state for something other than a NumPy array or dtype")
    if target.kind == "dtype":  # dtype(spec, align, copy), state (version, byte order, ...)
        dtype = np.dtype(str(target.args[0]))
        order = state[1] if isinstance(state, tuple) and len(state) > 1 else "|"
        target.value = dtype.newbyteorder(order) if order in "<>" else dtype
        return
    # ndarray state: (version, shape, dtype, fortran order, raw bytes or, for object arrays, the item list)
    _, shape, dtype, fortran, data = state
    dtype, order = _resolve(dtype), "F" if fortran else "C"
    if not isinstance(dtype, np.dtype):
        raise RefusedPickle("an array without a dtype")
    if dtype.hasobject:
        items = np.empty(len(data), dtype=object)
        items[:] = _resolve(list(data))
        target.value = items.reshape(shape, order=order)
    else:
        target.value = np.frombuffer(bytes(data), dtype=dtype).reshape(shape, order=order).copy()


def _parse_pickle(handle: BinaryIO) -> Any:
    """The data a pickle of plain containers and NumPy arrays describes, built without unpickling."""
    stack: list[Any] = []
    marks: list[int] = []
    memo: dict[int, Any] = {}

    def pop_mark() -> list[Any]:
        start = marks.pop()
        items = stack[start:]
        del stack[start:]
        return items

    for opcode, argument, _ in pickletools.genops(handle):
        name = opcode.name
        if name in _NO_EFFECT:
            continue
        if name == "STOP":
            return _resolve(stack.pop())
        if name in _PUSH_CONSTANT:
            stack.append(_PUSH_CONSTANT[name])
        elif name in _PUSH_ARGUMENT:
            stack.append(argument)
        elif name == "MARK":
            marks.append(len(stack))
        elif name == "EMPTY_DICT":
            stack.append({})
        elif name == "EMPTY_LIST":
            stack.append([])
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            size = int(name[-1])
            items = tuple(stack[-size:])
            del stack[-size:]
            stack.append(items)
        elif name == "TUPLE":
            stack.append(tuple(pop_mark()))
        elif name == "APPEND":
            value = stack.pop()
            stack[-1].append(value)
        elif name == "APPENDS":
            items = pop_mark()
            stack[-1].extend(items)
        elif name == "SETITEM":
            value, key = stack.pop(), stack.pop()
            stack[-1][key] = value
        elif name == "SETITEMS":
            items = pop_mark()
            stack[-1].update(zip(items[::2], items[1::2]))
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("BINPUT", "LONG_BINPUT"):
            memo[argument] = stack[-1]
        elif name in ("BINGET", "LONG_BINGET"):
            stack.append(memo[argument])
        elif name in ("GLOBAL", "STACK_GLOBAL"):
            if name == "GLOBAL":
                module, attribute = argument.split(" ", 1)
            else:
                attribute, module = stack.pop(), stack.pop()
            if (module, attribute) not in _ALLOWED_GLOBALS:
                raise RefusedPickle(f"refused global {module}.{attribute}")
            stack.append(_Global(module, attribute))
        elif name == "REDUCE":
            args = stack.pop()
            stack.append(_reduce(stack.pop(), args))
        elif name == "BUILD":
            state = stack.pop()
            _build(stack[-1], state)
        else:
            raise RefusedPickle(f"pickle opcode {name}, which plain data does not use")
    raise RefusedPickle("no STOP opcode")


def read_dwpose_npy(path: str | Path) -> Any:
    """The object of a .npy file: a plain array, or the dict / list of arrays that np.save pickled into it."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            version = npy_format.read_magic(handle)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"unsupported .npy format version {version}")
            read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            _, _, dtype = read_header(handle)
            if dtype != np.dtype(object):
                return np.load(path, allow_pickle=False)
            stored = _parse_pickle(handle)
    except RefusedPickle as error:
        raise KeypointFileError(f"{path} holds more than DWPose data ({error}); it is not read") from error
    except (OSError, ValueError, EOFError, TypeError, AttributeError, IndexError, KeyError) as error:
        raise KeypointFileError(f"{path} is not a readable .npy file ({type(error).__name__}: {error})") from error
    if isinstance(stored, np.ndarray) and stored.dtype == object and stored.shape == ():
        return stored.item()  # np.save(path, pose_dict) pickles a 0-d object array around the dict
    return stored
