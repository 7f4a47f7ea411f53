"""TFRecord files and ``tf.train.Example`` messages without TensorFlow.

A TFRecord file is a sequence of records, each::

    uint64 length (little endian)
    uint32 masked CRC-32C of the 8 length bytes
    bytes  data[length]
    uint32 masked CRC-32C of data

(mask: ``((crc >> 15) | (crc << 17)) + 0xa282ead8`` modulo 2^32). The data of
an InstaVariety record is a serialized ``tf.train.Example``::

    Example   { Features features = 1; }
    Features  { map<string, Feature> feature = 1; }   // entries: key = 1, value = 2
    Feature   { oneof { BytesList bytes_list = 1; FloatList float_list = 2;
                        Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }
    FloatList { repeated float value = 1 [packed]; }
    Int64List { repeated int64 value = 1 [packed]; }

:func:`parse_example` decodes that with a small protobuf wire-format reader
(varints, length-delimited fields, fixed32 floats; packed or not).
:func:`encode_example` and :func:`write_tfrecord` are the inverse, used by the
test fixtures.
"""
from __future__ import annotations

import os
import struct
from typing import Dict, Iterator, List, Tuple, Union

import numpy as np

from lib.data_utils.common import ConverterError

FeatureValue = Union[List[bytes], np.ndarray]

# --------------------------------------------------------------------------- CRC-32C

_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data`` (pure Python; fine for headers and small records)."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# --------------------------------------------------------------------------- records

def read_tfrecord(path: str | os.PathLike, check_data_crc: bool = False) -> Iterator[bytes]:
    """Yield the data of every record of a TFRecord file.

    The length CRC is always checked (it catches non-TFRecord files at once); the
    data CRC only with ``check_data_crc`` (pure-Python CRC is slow on image data).
    """
    with open(path, "rb") as fh:
        index = 0
        while True:
            head = fh.read(12)
            if not head:
                return
            if len(head) < 12:
                raise ConverterError(f"{path}: record {index}: truncated header")
            length_bytes, crc = head[:8], struct.unpack("<I", head[8:])[0]
            if masked_crc(length_bytes) != crc:
                raise ConverterError(f"{path}: record {index}: bad length checksum (not a TFRecord file?)")
            (length,) = struct.unpack("<Q", length_bytes)
            data = fh.read(length)
            tail = fh.read(4)
            if len(data) < length or len(tail) < 4:
                raise ConverterError(f"{path}: record {index}: truncated data")
            if check_data_crc and masked_crc(data) != struct.unpack("<I", tail)[0]:
                raise ConverterError(f"{path}: record {index}: bad data checksum")
            yield data
            index += 1


def write_tfrecord(path: str | os.PathLike, records: List[bytes]) -> None:
    with open(path, "wb") as fh:
        for data in records:
            length = struct.pack("<Q", len(data))
            fh.write(length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data)))


# --------------------------------------------------------------------------- protobuf wire format

def _varint(buf: bytes, pos: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise ValueError("varint too long")


def _fields(buf: bytes) -> Iterator[Tuple[int, int, Union[int, bytes]]]:
    """(field number, wire type, value) for each field of a message."""
    pos = 0
    n = len(buf)
    while pos < n:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
        elif wire == 1:
            val, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            val, pos = buf[pos:pos + size], pos + size
            if pos > n:
                raise ValueError("truncated length-delimited field")
        elif wire == 5:
            val, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield field, wire, val


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _parse_feature(buf: bytes) -> FeatureValue:
    for field, wire, val in _fields(buf):
        if field == 1:  # BytesList
            return [v for f, w, v in _fields(val) if f == 1]
        if field == 2:  # FloatList
            chunks = []
            for f, w, v in _fields(val):
                if f == 1:
                    chunks.append(np.frombuffer(v, dtype="<f4"))
            return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        if field == 3:  # Int64List
            out: List[int] = []
            for f, w, v in _fields(val):
                if f != 1:
                    continue
                if w == 0:
                    out.append(_signed64(v))
                else:
                    p = 0
                    while p < len(v):
                        x, p = _varint(v, p)
                        out.append(_signed64(x))
            return np.asarray(out, dtype=np.int64)
    return []  # an empty Feature


def parse_example(data: bytes) -> Dict[str, FeatureValue]:
    """Serialized ``tf.train.Example`` -> {key: list of bytes | float32 array | int64 array}."""
    out: Dict[str, FeatureValue] = {}
    try:
        for field, _, features in _fields(data):
            if field != 1:
                continue
            for f, _, entry in _fields(features):
                if f != 1:
                    continue
                key, value = None, b""
                for ef, _, ev in _fields(entry):
                    if ef == 1:
                        key = ev.decode("utf-8")
                    elif ef == 2:
                        value = ev
                if key is not None:
                    out[key] = _parse_feature(value)
    except (ValueError, UnicodeDecodeError) as err:
        raise ConverterError(f"not a tf.train.Example message ({err})") from None
    return out


def _enc_varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _enc_len(field: int, payload: bytes) -> bytes:
    return _enc_varint(field << 3 | 2) + _enc_varint(len(payload)) + payload


def encode_example(features: Dict[str, Union[List[bytes], np.ndarray, List[float], List[int]]]) -> bytes:
    """Serialize {key: list of bytes | float array | int array} as a ``tf.train.Example``
    (floats/ints packed, as TensorFlow writes them)."""
    entries = b""
    for key, value in features.items():
        if isinstance(value, (list, tuple)) and (not value or isinstance(value[0], bytes)):
            inner = b"".join(_enc_len(1, v) for v in value)
            feat = _enc_len(1, inner)
        else:
            arr = np.asarray(value)
            if arr.dtype.kind == "f":
                feat = _enc_len(2, _enc_len(1, arr.astype("<f4").tobytes()))
            else:
                feat = _enc_len(3, _enc_len(1, b"".join(_enc_varint(int(x)) for x in arr.ravel())))
        entries += _enc_len(1, _enc_len(1, key.encode("utf-8")) + _enc_len(2, feat))
    return _enc_len(1, entries)
