"""kaext._btf reads the running kernel's BTF: checked against layouts fixed by the kernel's UAPI
headers (include/uapi/linux/tcp.h, include/uapi/linux/bpf.h), which every kernel keeps."""

from __future__ import annotations

import errno
import os

import pytest

from kaext._btf import BTF, VMLINUX

pytestmark = pytest.mark.one_implementation


@pytest.fixture(scope="module")
def btf() -> BTF:
    if not os.path.exists(VMLINUX):
        pytest.skip("this kernel has no BTF (/sys/kernel/btf/vmlinux): test_a_kernel_without_btf_is_named checks that")
    return BTF.vmlinux()


def test_a_kernel_without_btf_is_named() -> None:
    """A kernel built without CONFIG_DEBUG_INFO_BTF has no /sys/kernel/btf/vmlinux (e.g. Debian's
    user-mode-linux 6.1): BTF.vmlinux() raises FileNotFoundError naming the file and the option."""
    if os.path.exists(VMLINUX):
        assert BTF.vmlinux().field("tcp_info", "tcpi_state").size == 1
        return
    with pytest.raises(FileNotFoundError) as refused:
        BTF.vmlinux()
    assert refused.value.errno == errno.ENOENT
    assert VMLINUX in str(refused.value) and "CONFIG_DEBUG_INFO_BTF" in str(refused.value)


def test_struct_tcp_info_is_laid_out_as_the_uapi_header_says(btf: BTF) -> None:
    # struct tcp_info: eight u8 (two bytes of them bit fields), then u32 tcpi_rto at 8, ... tcpi_rtt at 68
    assert (btf.field("tcp_info", "tcpi_state").offset, btf.field("tcp_info", "tcpi_state").size) == (0, 1)
    assert (btf.field("tcp_info", "tcpi_rto").offset, btf.field("tcp_info", "tcpi_rto").size) == (8, 4)
    assert (btf.field("tcp_info", "tcpi_rtt").offset, btf.field("tcp_info", "tcpi_rtt").size) == (68, 4)
    with pytest.raises(LookupError, match="bit field"):
        btf.field("tcp_info", "tcpi_snd_wscale")
    with pytest.raises(LookupError, match="no tcpi_nonexistent"):
        btf.field("tcp_info", "tcpi_nonexistent")


def test_enum_values_and_anonymous_members(btf: BTF) -> None:
    assert btf.enum_value("bpf_prog_type", "BPF_PROG_TYPE_RAW_TRACEPOINT") == 17
    assert btf.enum_value("bpf_map_type", "BPF_MAP_TYPE_RINGBUF") == 27
    assert btf.field("sock", "__sk_common.skc_family").size == 2
    with pytest.raises(LookupError):
        btf.find("kaext_no_such_struct")


def test_raw_tracepoint_parameters(btf: BTF) -> None:
    # TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)
    assert len(btf.tracepoint_params("inet_sock_set_state")) == 3


def test_not_btf_is_refused() -> None:
    for data in (b"", b"\0" * 64):
        with pytest.raises(OSError) as info:
            BTF(data)
        assert info.value.errno == errno.EINVAL
