-- snet-fabric.lua: a Wireshark dissector for snet fabric captures.
--
-- `snet run FILE --pcap DIR` writes DIR/fabric.pcap with link type 147
-- (USER0). Each record is a 4-byte pseudo-header followed by one fabric
-- packet exactly as it crossed the fabric:
--
--   pseudo-header  byte 0 version (1), byte 1 plane (0 = X, 1 = Y),
--                  byte 2 direction (0 = delivered to the destination
--                  endpoint), byte 3 reserved (0)
--   bytes  0..7    header word, big-endian:
--                  dst ID 63..44 | src ID 43..24 | type 23..20 | rsp 19 |
--                  length in words 18..11 | pad 10..9 | tid 8..5 | rsvd 4..0
--   bytes  8..15   address, big-endian (window key 63..32, offset 31..0;
--                  the key is an AVT index in its high 20 bits and a
--                  generation in its low 12)
--   bytes 16..     payload: none for read requests and write acks, the data
--                  for write requests and read responses, one reason byte
--                  for NACKs
--   last 4 bytes   CRC-32 (IEEE 802.3: reflected, polynomial 0xEDB88320,
--                  initial value and final XOR 0xFFFFFFFF) over header,
--                  address and payload, stored big-endian
--
-- The data length is n = words * 4 - pad (the requested length for a read
-- request). The format is described in fabric/src/packet.rs; the checks
-- below are the ones its parser makes, each reported as expert info.
--
-- Install: copy this file to ~/.local/lib/wireshark/plugins/ (Wireshark
-- and tshark load it at start), or pass it to one run:
--   tshark -X lua_script:tools/wireshark/snet-fabric.lua -r fabric.pcap
-- See tools/wireshark/README.md.

local bit = bit -- Lua BitOp, loaded by every Wireshark with Lua support

local snet = Proto("snet_fabric", "snet fabric packet")

local PSEUDO_LEN = 4
local PSEUDO_VERSION = 1
local HEADER_LEN = 8
local ADDRESS_LEN = 8
local CRC_LEN = 4
local OVERHEAD = HEADER_LEN + ADDRESS_LEN + CRC_LEN
-- The largest payload (or requested read length) of any generation:
-- 64 bytes on ServerNet1, 512 on ServerNet2 and ServerNet3.
local MAX_PAYLOAD = 512

local TYPE_READ, TYPE_WRITE, TYPE_NACK = 0x1, 0x2, 0xF

local plane_names = { [0] = "X", [1] = "Y" }
local direction_names = { [0] = "delivered to the destination endpoint" }
local type_names = { [TYPE_READ] = "Read", [TYPE_WRITE] = "Write", [TYPE_NACK] = "Nack" }
local nack_names = {
    [1] = "no_window",
    [2] = "wrong_requester",
    [3] = "outside_window",
    [4] = "not_writable",
    [5] = "not_readable",
    [6] = "stale_key",
    [7] = "bad_request",
}
-- The values of Wireshark's own checksum status fields.
local CRC_BAD, CRC_GOOD, CRC_UNVERIFIED = 0, 1, 2
local crc_status_names = { [CRC_BAD] = "Bad", [CRC_GOOD] = "Good", [CRC_UNVERIFIED] = "Unverified" }

local f = {
    version = ProtoField.uint8("snet_fabric.pseudo.version", "Pseudo-header version", base.DEC),
    plane = ProtoField.uint8("snet_fabric.plane", "Plane", base.DEC, plane_names),
    direction = ProtoField.uint8("snet_fabric.direction", "Direction", base.DEC, direction_names),
    pseudo_reserved = ProtoField.uint8("snet_fabric.pseudo.reserved", "Pseudo-header reserved", base.HEX),

    header = ProtoField.uint64("snet_fabric.header", "Header word", base.HEX),
    dst = ProtoField.uint24("snet_fabric.dst", "Destination endpoint ID", base.DEC_HEX, nil, 0xFFFFF0),
    src = ProtoField.uint24("snet_fabric.src", "Source endpoint ID", base.DEC_HEX, nil, 0x0FFFFF),
    type = ProtoField.uint8("snet_fabric.type", "Transaction type", base.HEX, type_names, 0xF0),
    rsp = ProtoField.bool("snet_fabric.rsp", "Response", 8, { "response", "request" }, 0x08),
    words = ProtoField.uint16("snet_fabric.words", "Length (words)", base.DEC, nil, 0x07F8),
    pad = ProtoField.uint8("snet_fabric.pad", "Pad bytes", base.DEC, nil, 0x06),
    tid = ProtoField.uint16("snet_fabric.tid", "Transaction ID", base.DEC, nil, 0x01E0),
    reserved = ProtoField.uint8("snet_fabric.reserved", "Reserved", base.HEX, nil, 0x1F),
    kind = ProtoField.string("snet_fabric.kind", "Kind"),
    len = ProtoField.uint16("snet_fabric.len", "Data length", base.DEC),

    addr = ProtoField.uint64("snet_fabric.addr", "Address", base.HEX),
    key = ProtoField.uint32("snet_fabric.addr.key", "Window key", base.HEX),
    key_index = ProtoField.uint32("snet_fabric.addr.key.index", "AVT index", base.DEC, nil, 0xFFFFF000),
    key_generation = ProtoField.uint32("snet_fabric.addr.key.generation", "Generation", base.DEC, nil, 0x00000FFF),
    offset = ProtoField.uint32("snet_fabric.addr.offset", "Offset", base.HEX),

    payload = ProtoField.bytes("snet_fabric.payload", "Payload"),
    payload_len = ProtoField.uint16("snet_fabric.payload.len", "Payload bytes on the wire", base.DEC),
    nack_reason = ProtoField.uint8("snet_fabric.nack_reason", "NACK reason", base.DEC, nack_names),

    crc = ProtoField.uint32("snet_fabric.crc", "CRC-32", base.HEX),
    crc_computed = ProtoField.uint32("snet_fabric.crc.computed", "Computed CRC-32", base.HEX),
    crc_status = ProtoField.uint8("snet_fabric.crc.status", "CRC-32 status", base.DEC, crc_status_names),
}
snet.fields = {
    f.version, f.plane, f.direction, f.pseudo_reserved,
    f.header, f.dst, f.src, f.type, f.rsp, f.words, f.pad, f.tid, f.reserved, f.kind, f.len,
    f.addr, f.key, f.key_index, f.key_generation, f.offset,
    f.payload, f.payload_len, f.nack_reason,
    f.crc, f.crc_computed, f.crc_status,
}

local e = {
    pseudo_short = ProtoExpert.new("snet_fabric.pseudo.short", "Record shorter than the 4-byte pseudo-header",
        expert.group.MALFORMED, expert.severity.ERROR),
    pseudo_version = ProtoExpert.new("snet_fabric.pseudo.version.unknown", "Unknown pseudo-header version",
        expert.group.UNDECODED, expert.severity.WARN),
    pseudo_value = ProtoExpert.new("snet_fabric.pseudo.unknown", "Unknown pseudo-header value",
        expert.group.PROTOCOL, expert.severity.WARN),
    truncated = ProtoExpert.new("snet_fabric.truncated", "Packet shorter than the 20-byte minimum",
        expert.group.MALFORMED, expert.severity.ERROR),
    length = ProtoExpert.new("snet_fabric.len.mismatch", "Packet length differs from what the header implies",
        expert.group.MALFORMED, expert.severity.ERROR),
    snapped = ProtoExpert.new("snet_fabric.snapped", "Packet cut short by the capture's snapshot length",
        expert.group.UNDECODED, expert.severity.NOTE),
    bad_type = ProtoExpert.new("snet_fabric.type.bad", "Invalid transaction type",
        expert.group.MALFORMED, expert.severity.ERROR),
    reserved = ProtoExpert.new("snet_fabric.reserved.nonzero", "Reserved header bits are not zero",
        expert.group.MALFORMED, expert.severity.ERROR),
    pad = ProtoExpert.new("snet_fabric.pad.bad", "Non-zero pad with a length of 0 words",
        expert.group.MALFORMED, expert.severity.ERROR),
    nack = ProtoExpert.new("snet_fabric.nack.bad", "Malformed NACK",
        expert.group.MALFORMED, expert.severity.ERROR),
    ack = ProtoExpert.new("snet_fabric.ack.data", "Write ack with a non-zero data length",
        expert.group.MALFORMED, expert.severity.ERROR),
    too_large = ProtoExpert.new("snet_fabric.len.too_large", "Data length exceeds every generation's maximum",
        expert.group.PROTOCOL, expert.severity.WARN),
    crc_bad = ProtoExpert.new("snet_fabric.crc.bad", "Bad CRC-32",
        expert.group.CHECKSUM, expert.severity.ERROR),
}
snet.experts = {
    e.pseudo_short, e.pseudo_version, e.pseudo_value, e.truncated, e.length, e.snapped,
    e.bad_type, e.reserved, e.pad, e.nack, e.ack, e.too_large, e.crc_bad,
}

-- CRC-32 as crc32fast computes it: reflected, polynomial 0xEDB88320, initial
-- value 0xFFFFFFFF, final XOR 0xFFFFFFFF. BitOp works on signed 32-bit
-- numbers; `unsigned` maps its results to 0..2^32-1.
local function unsigned(v)
    if v < 0 then
        return v + 4294967296
    end
    return v
end

local crc_table = {}
for i = 0, 255 do
    local c = i
    for _ = 1, 8 do
        if bit.band(c, 1) ~= 0 then
            c = bit.bxor(bit.rshift(c, 1), 0xEDB88320)
        else
            c = bit.rshift(c, 1)
        end
    end
    crc_table[i] = c
end

local function crc32(s)
    local band, bxor, rshift = bit.band, bit.bxor, bit.rshift
    local byte, tbl = string.byte, crc_table
    local c = bit.bnot(0)
    local n = #s
    local i = 1
    while i <= n do
        -- string.byte in chunks: one call per 64 bytes instead of per byte.
        local chunk = { byte(s, i, math.min(i + 63, n)) }
        for j = 1, #chunk do
            c = bxor(tbl[band(bxor(c, chunk[j]), 0xFF)], rshift(c, 8))
        end
        i = i + 64
    end
    return unsigned(bit.bnot(c))
end

local function hex_id(id)
    return string.format("0x%05x", id)
end

local function kind_of(ty, rsp)
    if ty == TYPE_READ then
        return rsp and "Read response" or "Read request", rsp and "ReadResp" or "ReadReq"
    elseif ty == TYPE_WRITE then
        return rsp and "Write ack" or "Write request", rsp and "WriteAck" or "WriteReq"
    elseif ty == TYPE_NACK then
        return "NACK", "Nack"
    end
    return string.format("Invalid type 0x%x", ty), string.format("Type0x%x", ty)
end

-- Dissects one packet (the record after its pseudo-header) into `tree`;
-- `reported` is the packet's length on the wire, which is more than the
-- bytes in `tvb` if the capture cut the record short. Returns the Info text.
local function dissect_packet(tvb, pinfo, tree, plane, reported)
    local len = tvb:len()
    local packet_tree = tree
    if len < HEADER_LEN + ADDRESS_LEN then
        if len > 0 then
            packet_tree:add(tvb(0, len), "Packet bytes: " .. len)
        end
        if len < reported then
            packet_tree:add_proto_expert_info(e.snapped, string.format(
                "The capture kept %d of the packet's %d bytes", len, reported))
            return string.format("Packet cut short by the capture (%d of %d bytes)", len, reported)
        end
        packet_tree:add_proto_expert_info(e.truncated,
            string.format("Packet is %d bytes, shorter than the %d-byte minimum (header + address + CRC)",
                reported, OVERHEAD))
        return string.format("Truncated packet (%d bytes)", reported)
    end

    -- Header word.
    local hdr = tvb(0, HEADER_LEN)
    local byte5, byte6, byte7 = tvb(5, 1):uint(), tvb(6, 1):uint(), tvb(7, 1):uint()
    local dst = bit.rshift(tvb(0, 3):uint(), 4)
    local src = bit.band(tvb(2, 3):uint(), 0xFFFFF)
    local ty = bit.rshift(byte5, 4)
    local rsp = bit.band(byte5, 0x08) ~= 0
    local words = bit.rshift(bit.band(tvb(5, 2):uint(), 0x07F8), 3)
    local pad = bit.rshift(bit.band(byte6, 0x06), 1)
    local tid = bit.rshift(bit.band(tvb(6, 2):uint(), 0x01E0), 5)
    local rsvd = bit.band(byte7, 0x1F)
    local n = words * 4 - pad
    if n < 0 then
        n = 0
    end
    local kind, short = kind_of(ty, rsp)

    local ht = packet_tree:add(f.header, hdr)
    ht:add(f.dst, tvb(0, 3))
    ht:add(f.src, tvb(2, 3))
    local type_item = ht:add(f.type, tvb(5, 1))
    ht:add(f.rsp, tvb(5, 1))
    ht:add(f.words, tvb(5, 2))
    local pad_item = ht:add(f.pad, tvb(6, 1))
    ht:add(f.tid, tvb(6, 2))
    local rsvd_item = ht:add(f.reserved, tvb(7, 1))
    ht:add(f.kind, hdr, kind):set_generated()
    local len_item = ht:add(f.len, hdr, n)
    len_item:set_generated()
    if ty == TYPE_READ and not rsp then
        len_item:append_text(" (requested)")
    end

    if ty ~= TYPE_READ and ty ~= TYPE_WRITE and ty ~= TYPE_NACK then
        type_item:add_proto_expert_info(e.bad_type, string.format(
            "Transaction type 0x%x is invalid; allowed are 0x1 (read), 0x2 (write), 0xf (nack)", ty))
    end
    if rsvd ~= 0 then
        rsvd_item:add_proto_expert_info(e.reserved,
            string.format("Reserved header bits are 0x%02x; they must be zero", rsvd))
    end
    if words == 0 and pad ~= 0 then
        pad_item:add_proto_expert_info(e.pad,
            "Pad is non-zero although the length is 0 words; pad must be 0 for empty packets")
    end
    if n > MAX_PAYLOAD then
        len_item:add_proto_expert_info(e.too_large, string.format(
            "Data length %d exceeds the largest payload of every generation (%d bytes)", n, MAX_PAYLOAD))
    end

    -- Address.
    local addr_hex = string.format("0x%08x%08x", tvb(8, 4):uint(), tvb(12, 4):uint())
    local at = packet_tree:add(f.addr, tvb(8, ADDRESS_LEN))
    local kt = at:add(f.key, tvb(8, 4))
    kt:add(f.key_index, tvb(8, 4))
    kt:add(f.key_generation, tvb(8, 4))
    at:add(f.offset, tvb(12, 4))

    local info = string.format("%s %s→%s tid %d addr %s len %d", short, hex_id(src), hex_id(dst), tid,
        addr_hex, n)
    if ty == TYPE_NACK and len == OVERHEAD + 1 then
        local reason = tvb(16, 1):uint()
        info = string.format("%s (%s)", info, nack_names[reason] or string.format("code %d", reason))
    end

    if len < OVERHEAD then
        local rest = len - HEADER_LEN - ADDRESS_LEN
        if rest > 0 then
            packet_tree:add(tvb(16, rest), "Trailing bytes: " .. rest)
        end
        if len < reported then
            packet_tree:add_proto_expert_info(e.snapped, string.format(
                "The capture kept %d of the packet's %d bytes", len, reported))
            packet_tree:add(f.crc_status, tvb(0, len), CRC_UNVERIFIED):set_generated()
            return info .. " [cut short by the capture]"
        else
            packet_tree:add_proto_expert_info(e.truncated, string.format(
                "Packet is %d bytes, shorter than the %d-byte minimum (header + address + CRC)", len, OVERHEAD))
        end
        return info .. " [truncated]"
    end

    -- Payload: bytes between the address and the CRC.
    local wire = len - OVERHEAD
    local expected
    if ty == TYPE_READ and not rsp then
        expected = 0
    else
        expected = n
    end
    -- (Zero-length ranges are not allowed everywhere: an empty payload's
    -- length points at the whole packet.)
    local pl_range = wire > 0 and tvb(16, wire) or tvb(0, len)
    local pl_item
    if wire > 0 then
        pl_item = packet_tree:add(f.payload, pl_range)
    end
    local pl_len_item = packet_tree:add(f.payload_len, pl_range, wire)
    pl_len_item:set_generated()
    if len < reported then
        -- The capture kept only part of the packet: sizes and CRC unknown.
        pl_len_item:add_proto_expert_info(e.snapped, string.format(
            "The capture kept %d of the packet's %d bytes; payload length and CRC not checked", len, reported))
        packet_tree:add(f.crc_status, tvb(0, len), CRC_UNVERIFIED):set_generated()
        return info .. " [cut short by the capture]"
    end
    if wire ~= expected then
        if ty == TYPE_READ and not rsp then
            pl_len_item:add_proto_expert_info(e.length, string.format(
                "Read request carries %d payload bytes; read requests carry none", wire))
        else
            pl_len_item:add_proto_expert_info(e.length, string.format(
                "Packet is %d bytes but its header implies %d (%d + data length %d)",
                len, OVERHEAD + expected, OVERHEAD, expected))
        end
    end
    if ty == TYPE_NACK then
        if not rsp then
            type_item:add_proto_expert_info(e.nack, "NACK with the response bit clear; a NACK is always a response")
        end
        if n ~= 1 then
            len_item:add_proto_expert_info(e.nack, string.format(
                "NACK with a data length of %d; a NACK carries exactly 1 byte (the reason)", n))
        end
        if wire == 1 then
            local reason = tvb(16, 1):uint()
            local ri = packet_tree:add(f.nack_reason, tvb(16, 1))
            if not nack_names[reason] then
                ri:add_proto_expert_info(e.nack,
                    string.format("NACK reason code %d is unknown; allowed are 1..=7", reason))
            end
        end
    elseif ty == TYPE_WRITE and rsp and n ~= 0 then
        len_item:add_proto_expert_info(e.ack, "Write ack with a non-zero data length; write acks carry no data")
    end
    if pl_item then
        pl_item:append_text(string.format(" (%d bytes)", wire))
    end

    -- CRC-32 over everything before it.
    local stored = tvb(len - CRC_LEN, CRC_LEN):uint()
    local computed = crc32(tvb:raw(0, len - CRC_LEN))
    local crc_item = packet_tree:add(f.crc, tvb(len - CRC_LEN, CRC_LEN))
    local status_item
    if stored == computed then
        crc_item:append_text(" [correct]")
        status_item = crc_item:add(f.crc_status, tvb(len - CRC_LEN, CRC_LEN), CRC_GOOD)
    else
        crc_item:append_text(string.format(" [incorrect, should be 0x%08x]", computed))
        crc_item:add(f.crc_computed, tvb(len - CRC_LEN, CRC_LEN), computed):set_generated()
        status_item = crc_item:add(f.crc_status, tvb(len - CRC_LEN, CRC_LEN), CRC_BAD)
        crc_item:add_proto_expert_info(e.crc_bad, string.format(
            "CRC mismatch: stored 0x%08x, computed 0x%08x", stored, computed))
        info = info .. " [bad CRC]"
    end
    status_item:set_generated()

    packet_tree:append_text(string.format(", %s, %s → %s, plane %s", kind, hex_id(src), hex_id(dst), plane))
    pinfo.cols.src = hex_id(src)
    pinfo.cols.dst = hex_id(dst)
    return info
end

function snet.dissector(tvb, pinfo, tree)
    pinfo.cols.protocol = "SNET"
    local tvb_len = tvb:len()
    local root = tree:add(snet, tvb())
    if tvb_len < PSEUDO_LEN then
        root:add_proto_expert_info(e.pseudo_short,
            string.format("Record is %d bytes, shorter than the %d-byte pseudo-header", tvb_len, PSEUDO_LEN))
        pinfo.cols.info = "Record shorter than the pseudo-header"
        return tvb_len
    end

    local version = tvb(0, 1):uint()
    local vi = root:add(f.version, tvb(0, 1))
    if version ~= PSEUDO_VERSION then
        vi:add_proto_expert_info(e.pseudo_version, string.format(
            "Pseudo-header version %d is unknown (this dissector knows version %d); record not decoded",
            version, PSEUDO_VERSION))
        if tvb_len > 1 then
            root:add(tvb(1, tvb_len - 1), string.format("Undecoded bytes: %d", tvb_len - 1))
        end
        pinfo.cols.info = string.format("Unknown pseudo-header version %d", version)
        return tvb_len
    end
    local plane_code = tvb(1, 1):uint()
    local plane = plane_names[plane_code] or string.format("unknown (%d)", plane_code)
    local pi = root:add(f.plane, tvb(1, 1))
    if not plane_names[plane_code] then
        pi:add_proto_expert_info(e.pseudo_value, string.format("Plane %d is neither X (0) nor Y (1)", plane_code))
    end
    local direction = tvb(2, 1):uint()
    local di = root:add(f.direction, tvb(2, 1))
    if not direction_names[direction] then
        di:add_proto_expert_info(e.pseudo_value, string.format("Direction %d is unknown", direction))
    end
    local ri = root:add(f.pseudo_reserved, tvb(3, 1))
    if tvb(3, 1):uint() ~= 0 then
        ri:add_proto_expert_info(e.pseudo_value, "Reserved pseudo-header byte is not zero")
    end

    if tvb_len == PSEUDO_LEN then
        root:add_proto_expert_info(e.truncated, string.format(
            "Record holds only the pseudo-header; a packet is at least %d bytes", OVERHEAD))
        pinfo.cols.info = string.format("[%s] Empty packet", plane)
        return tvb_len
    end
    local reported = tvb:reported_len() - PSEUDO_LEN
    local info = dissect_packet(tvb(PSEUDO_LEN):tvb(), pinfo, root, plane, reported)
    pinfo.cols.info = string.format("[%s] %s", plane, info)
    return tvb_len
end

-- Records of link type 147 (USER0, Wireshark's encapsulation 45) are
-- fabric packets.
local user0 = (wtap_encaps and wtap_encaps.USER0) or (wtap and wtap.USER0) or 45
DissectorTable.get("wtap_encap"):add(user0, snet)
