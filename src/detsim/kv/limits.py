"""Every named bound of the replicated store's client side and state machine, in one place.

Rule: a bound is checked where the data enters (the RESP parser, the command parser, the state
machine's apply) and refused with a clear error reply, never by a crash or an unbounded wait.
"""

from __future__ import annotations

from typing import Final

from detsim.fs.records import MAX_PAYLOAD_BYTES as _MAX_RECORD_BYTES
from detsim.raft.core.config import ENTRY_OVERHEAD_BYTES as _ENTRY_OVERHEAD_BYTES
from detsim.raft.core.config import MESSAGE_OVERHEAD_BYTES as _MESSAGE_OVERHEAD_BYTES
from detsim.raft.core.messages import MAX_MESSAGE_BYTES as _MAX_MESSAGE_BYTES

#: The largest key or value (bytes). Past it: `ERR string exceeds maximum allowed size ...`
#: (SET, MSET, CAS, APPEND's result), or a protocol error for a longer bulk string.
MAX_VALUE_BYTES: Final = 16 * 1024 * 1024

#: The largest Raft entry payload of one write command. A Raft entry must fit one transport
#: frame (with an append message's fields) and one log record, or the leader cannot store it
#: (its storage raises) nor send it: a larger SET would stop the node. So a write whose
#: arguments could encode to more is refused when parsed, and this bound, not
#: MAX_VALUE_BYTES, limits what one SET/MSET/CAS carries (10 MiB - 64 KiB today); APPEND can
#: still grow a value to MAX_VALUE_BYTES. Derived from the Raft bounds: it follows them.
#: One Raft append carries at most this many bytes of entries: a whole frame, less the room
#: for the message's own fields (the core's default is 1 MiB; the store raises it so that its
#: largest write fits one append).
RAFT_MAX_APPEND_BYTES: Final = _MAX_MESSAGE_BYTES - _MESSAGE_OVERHEAD_BYTES
MAX_WRITE_PAYLOAD_BYTES: Final = min(
    RAFT_MAX_APPEND_BYTES - _ENTRY_OVERHEAD_BYTES,  # one entry alone in an append
    _MAX_RECORD_BYTES - 1024,  # the entry's own fields in its log record
)

#: The Raft core settings the store runs with (NodeConfig.raft overrides them): the core refuses
#: a proposal over max_entry_bytes, so it must admit every write the parser admits.
RAFT_SETTINGS: Final = {
    "max_append_bytes": RAFT_MAX_APPEND_BYTES,
    "max_entry_bytes": MAX_WRITE_PAYLOAD_BYTES,
}

#: Writes in one Raft entry (a batch: a connection's run of pipelined writes, see
#: `detsim.kv.commands.encode_writes`); a longer run is cut into several entries, as is one
#: whose writes together could pass MAX_WRITE_PAYLOAD_BYTES.
MAX_BATCH_WRITES: Final = 1024

#: Room for a maximal value's key, command name and framing in one request.
REQUEST_OVERHEAD_BYTES: Final = 64 * 1024

#: The largest request (one command with its arguments, as framed on the wire). A declared
#: length that would pass it is refused before its bytes are read.
MAX_REQUEST_BYTES: Final = MAX_VALUE_BYTES + REQUEST_OVERHEAD_BYTES

#: Arguments in one request (Redis allows INT_MAX; a million keys in one MGET is plenty).
MAX_REQUEST_ARGS: Final = 1024 * 1024

#: An inline (telnet-style) request line, as Redis's PROTO_INLINE_MAX_SIZE.
MAX_INLINE_BYTES: Final = 64 * 1024

#: A `*<count>` or `$<length>` header line: 20 digits and a sign fit; longer is garbage.
MAX_HEADER_LINE_BYTES: Final = 64

#: The logical size of the data set: the sum of len(key) + len(value) over all keys. A write
#: that would grow it past this is refused (`OOM ...`) on every replica alike (the count is
#: part of the replicated state, not a measure of the machine).
MAX_DATA_BYTES: Final = 1024 * 1024 * 1024

#: The SQLite image (the snapshot) may not grow past this; a backstop under the Raft storage's
#: `MAX_SNAPSHOT_BYTES` (4 GiB). SQLite's page and index overhead over MAX_DATA_BYTES fits.
MAX_DATABASE_IMAGE_BYTES: Final = 3 * 1024 * 1024 * 1024
