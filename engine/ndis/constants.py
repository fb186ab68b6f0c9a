"""Sizes, flags and status codes of the modelled NDIS/WDM structures (x64, NDIS 6.80+ driver view).

Every number carries its derivation. Labels follow ../shared/NDIS_MODEL.md: DOC = Microsoft documentation,
HDR = Microsoft header, DERIVED = computed by us from the header layout, 3P = third party.
"""

from __future__ import annotations

# --- platform ---------------------------------------------------------------------------------------------

#: bytes per page on x64 (PAGE_SIZE, HDR wdm.h)
PAGE_SIZE = 4096
#: MEMORY_ALLOCATION_ALIGNMENT on x64 (HDR); ContextSize/ContextBackFill must be multiples of it (DOC)
MEMORY_ALLOCATION_ALIGNMENT = 16
#: sizeof(PVOID) on x64; NdisAllocateNetBufferListContext sizes are multiples of it (DOC, NDIS_MODEL.md §2.1)
POINTER_SIZE = 8

# --- NET_BUFFER_LIST (NDIS_MODEL.md §1.1) ----------------------------------------------------------------

#: MaxNetBufferListInfo for an x64 driver built against NDIS >= 6.80 headers (HDR nblinfo.h, §1.1)
MAX_NET_BUFFER_LIST_INFO = 27
#: offset of NetBufferListInfo in NET_BUFFER_LIST on x64 (DERIVED, also C_ASSERTed by ReactOS, §1.1)
NBL_INFO_OFFSET = 144
#: sizeof(NET_BUFFER_LIST) x64 = 144 + 8 * 27 = 360, rounded up to 16 → 368 = 0x170 (DERIVED, §1.1)
NBL_SIZE = 368
#: sizeof(NET_BUFFER) x64 = 0xB0 (DERIVED, §1.2)
NB_SIZE = 176
#: NET_BUFFER_LIST_CONTEXT header x64: Next (8) + Size (2) + Offset (2), ContextData 16-byte aligned → 16
#: (DERIVED, §1.1)
NBL_CONTEXT_HEADER_SIZE = 16

# NET_BUFFER_LIST_INFO ids (HDR nblinfo.h; NDIS_MODEL.md §1.1)
TCP_IP_CHECKSUM_NET_BUFFER_LIST_INFO = 0
IPSEC_OFFLOAD_V1_NET_BUFFER_LIST_INFO = 1
TCP_LARGE_SEND_NET_BUFFER_LIST_INFO = 2
CLASSIFICATION_HANDLE_NET_BUFFER_LIST_INFO = 3
IEEE8021Q_NET_BUFFER_LIST_INFO = 4
NET_BUFFER_LIST_CANCEL_ID = 5
MEDIA_SPECIFIC_INFORMATION = 6
NET_BUFFER_LIST_FRAME_TYPE = 7
NET_BUFFER_LIST_HASH_VALUE = 8
NET_BUFFER_LIST_HASH_INFO = 9
WFP_NET_BUFFER_LIST_INFO = 10

# NblFlags (public, DOC §1.1)
NDIS_NBL_FLAGS_SEND_READ_ONLY = 0x00000001
NDIS_NBL_FLAGS_RECV_READ_ONLY = 0x00000002
NDIS_NBL_FLAGS_HD_SPLIT = 0x00000100
NDIS_NBL_FLAGS_IS_IPV4 = 0x00000200
NDIS_NBL_FLAGS_IS_IPV6 = 0x00000400
NDIS_NBL_FLAGS_IS_TCP = 0x00000800
NDIS_NBL_FLAGS_IS_UDP = 0x00001000
NDIS_NBL_FLAGS_IS_LOOPBACK_PACKET = 0x00008000

# Flags partitions (private NBL Flags, DOC §1.1; NDIS 6.30+ values for the protocol partition)
NBL_FLAGS_PROTOCOL_RESERVED = 0xFFF00003
NBL_FLAGS_SCRATCH = 0x000F0000
NBL_FLAGS_MINIPORT_RESERVED = 0x0000F000
NBL_FLAGS_NDIS_RESERVED = 0x00000FFC

# NET_BUFFER_LIST_POOL_PARAMETERS.Flags (DOC §2.1)
NET_BUFFER_LIST_POOL_FLAG_VERIFY = 0x00000001

# NdisAllocateCloneNetBufferList flags (DOC)
NDIS_CLONE_FLAGS_RESERVED = 0x00000001
NDIS_CLONE_FLAGS_USE_ORIGINAL_MDLS = 0x00000002

# SendFlags / SendCompleteFlags (DOC)
NDIS_SEND_FLAGS_DISPATCH_LEVEL = 0x00000001
NDIS_SEND_FLAGS_CHECK_FOR_LOOPBACK = 0x00000002
NDIS_SEND_COMPLETE_FLAGS_DISPATCH_LEVEL = 0x00000001

# --- NDIS_STATUS (HDR ndis.h / ntstatus.h) -----------------------------------------------------------------

NDIS_STATUS_SUCCESS = 0x00000000
NDIS_STATUS_PENDING = 0x00000103
NDIS_STATUS_FAILURE = 0xC0000001
NDIS_STATUS_RESOURCES = 0xC000009A
NDIS_STATUS_INVALID_LENGTH = 0xC0010014
NDIS_STATUS_RESET_IN_PROGRESS = 0xC001000D
#: = STATUS_NDIS_REQUEST_ABORTED (NDIS 6: a cancelled send)
NDIS_STATUS_SEND_ABORTED = 0xC023000C
#: = STATUS_NDIS_PAUSED
NDIS_STATUS_PAUSED = 0xC023002A

#: The statuses a miniport may complete a send with (DOC, NET_BUFFER_LIST Status, NDIS_MODEL.md §1.1).
SEND_COMPLETION_STATUSES = frozenset(
    {
        NDIS_STATUS_SUCCESS,
        NDIS_STATUS_INVALID_LENGTH,
        NDIS_STATUS_RESOURCES,
        NDIS_STATUS_FAILURE,
        NDIS_STATUS_SEND_ABORTED,
        NDIS_STATUS_RESET_IN_PROGRESS,
        NDIS_STATUS_PAUSED,
    }
)

# --- MDL (NDIS_MODEL.md §1.3) --------------------------------------------------------------------------------

#: sizeof(MDL) x64 = 0x30; the PFN_NUMBER array (8 bytes per page spanned) follows it (§1.3)
MDL_SIZE = 48
#: sizeof(PFN_NUMBER) on x64
PFN_SIZE = 8
#: IoAllocateMdl serves MDLs spanning at most this many pages from a fixed-size lookaside list (3P, NDIS_MODEL.md
#: §5: "NT allocates MDLs < 23 pages from lookaside lists"; the flag MDL_ALLOCATED_FIXED_SIZE marks them)
MDL_LOOKASIDE_MAX_PAGES = 23
#: size of one fixed-size lookaside MDL: header + 23 PFNs (DERIVED)
MDL_FIXED_BLOCK_SIZE = MDL_SIZE + PFN_SIZE * MDL_LOOKASIDE_MAX_PAGES

MDL_MAPPED_TO_SYSTEM_VA = 0x0001
MDL_PAGES_LOCKED = 0x0002
MDL_SOURCE_IS_NONPAGED_POOL = 0x0004
MDL_ALLOCATED_FIXED_SIZE = 0x0008
MDL_PARTIAL = 0x0010
MDL_PARTIAL_HAS_BEEN_MAPPED = 0x0020
MDL_IO_PAGE_READ = 0x0040
MDL_WRITE_OPERATION = 0x0080
MDL_NETWORK_HEADER = 0x1000

# LOCK_OPERATION for MmProbeAndLockPages (HDR wdm.h)
IO_READ_ACCESS = 0
IO_WRITE_ACCESS = 1
IO_MODIFY_ACCESS = 2
# KPROCESSOR_MODE
KERNEL_MODE = 0
USER_MODE = 1

# --- NDIS 5 NDIS_PACKET (NDIS_MODEL.md §1.4) -----------------------------------------------------------------

#: offset of ProtocolReserved in NDIS_PACKET on x64: Private (48) + Miniport/Wrapper union (32) + Reserved[2]
#: (16) → 96 (DERIVED, §1.4)
NDIS_PACKET_PROTOCOL_RESERVED_OFFSET = 96
#: sizeof(NDIS_PACKET_OOB_DATA) x64: TimeToSend 8 + TimeReceived 8 + HeaderSize 4 + SizeMediaSpecificInfo 4 +
#: MediaSpecificInformation 8 + Status 4, padded to 8 → 40 (DERIVED from the public ndis.h structure)
NDIS_PACKET_OOB_DATA_SIZE = 40
#: NDIS_PER_PACKET_INFO: TcpIpChecksumPacketInfo … ShortPacketPaddingInfo, MaxPerPacketInfo = 12 (HDR ndis.h)
MAX_PER_PACKET_INFO = 12
#: sizeof(NDIS_PACKET_EXTENSION) = 12 pointers (DERIVED)
NDIS_PACKET_EXTENSION_SIZE = POINTER_SIZE * MAX_PER_PACKET_INFO
#: NdisAllocatePacketPoolEx: NumberOfDescriptors + NumberOfOverflowDescriptors <= 0xFFFF (DOC, §2.6)
NDIS_PACKET_POOL_MAX_DESCRIPTORS = 0xFFFF

# NDIS_PER_PACKET_INFO ids (HDR ndis.h)
TCP_IP_CHECKSUM_PACKET_INFO = 0
IPSEC_PACKET_INFO = 1
TCP_LARGE_SEND_PACKET_INFO = 2
CLASSIFICATION_HANDLE_PACKET_INFO = 3
IEEE8021Q_INFO = 6
ORIGINAL_PACKET_INFO = 7
PACKET_CANCEL_ID = 8


def round_up(value: int, multiple: int) -> int:
    """``value`` rounded up to a multiple of ``multiple`` (ALIGN_UP_BY)."""
    return (value + multiple - 1) // multiple * multiple


def ndis_packet_size(protocol_reserved_length: int) -> int:
    """Bytes of one NDIS_PACKET descriptor with ``protocol_reserved_length`` bytes of ProtocolReserved (NdisPacketSize).

    DERIVED from the public structures (NDIS_MODEL.md §1.4): the packet up to ProtocolReserved (96), the
    ProtocolReserved area rounded up to 8, then the NDIS_PACKET_OOB_DATA (40) and NDIS_PACKET_EXTENSION (96) blocks
    NDIS places behind it, the whole rounded up to MEMORY_ALLOCATION_ALIGNMENT. ndis.sys also keeps NDIS-private
    per-packet space (packet stacks for intermediate drivers) whose size the public headers do not give: not counted.
    """
    body = round_up(NDIS_PACKET_PROTOCOL_RESERVED_OFFSET + protocol_reserved_length, POINTER_SIZE)
    return round_up(body + NDIS_PACKET_OOB_DATA_SIZE + NDIS_PACKET_EXTENSION_SIZE, MEMORY_ALLOCATION_ALIGNMENT)


def pages_spanned(byte_offset: int, length: int) -> int:
    """Pages a buffer of ``length`` bytes starting ``byte_offset`` bytes into a page touches.

    ADDRESS_AND_SIZE_TO_SPAN_PAGES (HDR wdm.h); 0 for an empty buffer.
    """
    if length <= 0:
        return 0
    return (byte_offset % PAGE_SIZE + length + PAGE_SIZE - 1) // PAGE_SIZE


def mm_size_of_mdl(byte_offset: int, length: int) -> int:
    """Bytes of an MDL describing the buffer: the header plus one PFN per page spanned (MmSizeOfMdl, §1.3)."""
    return MDL_SIZE + PFN_SIZE * pages_spanned(byte_offset, length)
