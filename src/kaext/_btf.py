"""kaext._btf -- the running kernel's type information (BTF, ``/sys/kernel/btf/vmlinux``), read by kaext.

``kaext.watch`` reads kernel structures (``struct tcp_sock`` and what it embeds) from its BPF
programs with ``bpf_probe_read_kernel``; the offsets of their fields differ between kernel
builds, so they come from the running kernel's BTF, never from headers.  This module parses
the BTF format (``Documentation/bpf/btf.rst``: a header, a type section, a string section)
far enough for that: struct and union members (anonymous ones looked through), the sizes of
types, enum values and the parameters of a raw tracepoint's function prototype.
"""

from __future__ import annotations

import errno
import struct

__all__ = ["BTF", "VMLINUX", "Field"]

VMLINUX = "/sys/kernel/btf/vmlinux"

_MAGIC = 0xEB9F
(
    _INT,
    _PTR,
    _ARRAY,
    _STRUCT,
    _UNION,
    _ENUM,
    _FWD,
    _TYPEDEF,
    _VOLATILE,
    _CONST,
    _RESTRICT,
    _FUNC,
    _FUNC_PROTO,
    _VAR,
    _DATASEC,
    _FLOAT,
    _DECL_TAG,
    _TYPE_TAG,
    _ENUM64,
) = range(1, 20)
# bytes after the 12-byte common part: fixed, and per member (vlen)
_EXTRA = {_INT: (4, 0), _ARRAY: (12, 0), _STRUCT: (0, 12), _UNION: (0, 12), _ENUM: (0, 8), _FUNC_PROTO: (0, 8)}
_EXTRA.update({_VAR: (4, 0), _DATASEC: (0, 12), _DECL_TAG: (4, 0), _ENUM64: (0, 12)})
_MODIFIERS = (_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG)


class Field:
    """Where a field is: ``offset`` bytes from the start of the outer structure, ``size`` bytes."""

    __slots__ = ("offset", "size")

    def __init__(self, offset: int, size: int) -> None:
        self.offset = offset
        self.size = size

    def __repr__(self) -> str:
        return f"Field(offset={self.offset}, size={self.size})"


class BTF:
    """The types of one BTF blob (by default the running kernel's, ``/sys/kernel/btf/vmlinux``)."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 24:
            raise OSError(errno.EINVAL, "not BTF data: too short")
        magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", data)
        if magic != _MAGIC:
            raise OSError(errno.EINVAL, f"not BTF data (magic {magic:#x}; only little-endian BTF is read)")
        self._data = data
        self._strings = hdr_len + str_off
        self._strings_end = self._strings + str_len
        self._offsets = [0]  # type id -> offset of its record (id 0 is void)
        self._by_name: dict[tuple[int, bytes], int] = {}
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        unpack = struct.unpack_from
        wanted = (_STRUCT, _UNION, _ENUM, _ENUM64, _TYPEDEF)
        while pos < end:
            name_off, info, _size = unpack("<III", data, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            self._offsets.append(pos)
            if kind in wanted and name_off:
                self._by_name.setdefault((kind, self._name_bytes(name_off)), len(self._offsets) - 1)
            fixed, each = _EXTRA.get(kind, (0, 0))
            pos += 12 + fixed + each * vlen

    @classmethod
    def vmlinux(cls) -> BTF:
        """The running kernel's BTF; OSError (ENOENT) naming the file when the kernel has none."""
        try:
            with open(VMLINUX, "rb") as f:
                return cls(f.read())
        except FileNotFoundError:
            raise FileNotFoundError(
                errno.ENOENT, f"this kernel has no BTF ({VMLINUX}: CONFIG_DEBUG_INFO_BTF is off)"
            ) from None

    def _name_bytes(self, off: int) -> bytes:
        start = self._strings + off
        return self._data[start : self._data.index(b"\0", start, self._strings_end)]

    def _record(self, type_id: int) -> tuple[int, int, int, int, int, bool]:
        """(offset, name_off, kind, vlen, size_or_type, kind_flag) of a type."""
        pos = self._offsets[type_id]
        name_off, info, size = struct.unpack_from("<III", self._data, pos)
        return pos, name_off, (info >> 24) & 0x1F, info & 0xFFFF, size, bool(info >> 31)

    def _resolve(self, type_id: int) -> int:
        """The type behind typedefs and qualifiers."""
        while True:
            _pos, _n, kind, _v, target, _kf = self._record(type_id)
            if kind not in _MODIFIERS:
                return type_id
            type_id = target

    def find(self, name: str, kind: str = "struct") -> int:
        """The id of the struct (``kind`` "struct", "union", "enum", "typedef") called ``name``."""
        code = {"struct": _STRUCT, "union": _UNION, "enum": _ENUM, "typedef": _TYPEDEF}[kind]
        found = self._by_name.get((code, name.encode()))
        if found is None and kind == "enum":
            found = self._by_name.get((_ENUM64, name.encode()))
        if found is None:
            raise LookupError(f"this kernel's BTF has no {kind} {name}")
        return found

    def size(self, type_id: int) -> int:
        """The size in bytes of a type."""
        type_id = self._resolve(type_id)
        _pos, _n, kind, _vlen, size, _kf = self._record(type_id)
        if kind == _PTR:
            return 8
        if kind == _ARRAY:
            elem, _index, nelems = struct.unpack_from("<III", self._data, self._offsets[type_id] + 12)
            return int(self.size(elem) * nelems)
        return int(size)

    def _member(self, type_id: int, name: str) -> tuple[int, int] | None:
        """(byte offset, type id) of member ``name`` of a struct/union, anonymous members looked through."""
        pos, _n, kind, vlen, _size, kind_flag = self._record(self._resolve(type_id))
        if kind not in (_STRUCT, _UNION):
            return None
        for i in range(vlen):
            name_off, member_type, offset = struct.unpack_from("<III", self._data, pos + 12 + 12 * i)
            bit_offset = offset & 0xFFFFFF if kind_flag else offset
            if kind_flag and offset >> 24:
                if name_off and self._name_bytes(name_off) == name.encode():
                    raise LookupError(f"{name} is a bit field (kaext.watch reads whole bytes)")
                continue
            if name_off == 0:
                inner = self._member(member_type, name)
                if inner is not None:
                    return bit_offset // 8 + inner[0], inner[1]
            elif self._name_bytes(name_off) == name.encode():
                return bit_offset // 8, member_type
        return None

    def field(self, struct_name: str, path: str) -> Field:
        """Where ``path`` (member names joined by ``.``) lies in ``struct struct_name``."""
        type_id, offset = self.find(struct_name), 0
        for part in path.split("."):
            found = self._member(type_id, part)
            if found is None:
                raise LookupError(f"this kernel's struct {struct_name} has no {path}")
            offset += found[0]
            type_id = found[1]
        return Field(offset, self.size(type_id))

    def enum_value(self, enum_name: str, member: str) -> int:
        """The value of ``member`` of ``enum enum_name``."""
        pos, _n, kind, vlen, _size, _kf = self._record(self.find(enum_name, "enum"))
        step = 12 if kind == _ENUM64 else 8
        for i in range(vlen):
            name_off, value = struct.unpack_from("<Ii", self._data, pos + 12 + step * i)
            if self._name_bytes(name_off) == member.encode():
                if kind == _ENUM64:
                    low, high = struct.unpack_from("<II", self._data, pos + 16 + step * i)
                    return int(low | high << 32)
                return int(value)
        raise LookupError(f"this kernel's enum {enum_name} has no {member}")

    def tracepoint_params(self, name: str) -> list[str]:
        """The parameter names of raw tracepoint ``name`` (``btf_trace_NAME``), the leading ``void *`` left out."""
        type_id = self._resolve(self.find(f"btf_trace_{name}", "typedef"))
        _pos, _n, kind, _vlen, target, _kf = self._record(type_id)
        if kind == _PTR:
            type_id = self._resolve(target)
        pos, _n, kind, vlen, _size, _kf = self._record(type_id)
        if kind != _FUNC_PROTO:
            raise LookupError(f"btf_trace_{name} is not a function prototype")
        names = []
        for i in range(vlen):
            name_off, _type = struct.unpack_from("<II", self._data, pos + 12 + 8 * i)
            names.append(self._name_bytes(name_off).decode() if name_off else "")
        return names[1:]
