#!/usr/bin/env python3
"""Writes the hand-made seeds of each fuzz target into fuzz/corpus/<target>/seed-*.

The seeds are valid inputs of each kind (a join, a browser's offer and answer, a STUN check,
a DTLS ClientHello, keyframes of each codec, a signed grant...), so that fuzzing starts from
the shapes the server really sees. scripts/fuzz runs this before fuzzing; the files are
committed with the minimised corpus. The input layouts are described in fuzz/src/targets.rs.
"""

import json
import os
import re
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS_RS = open(os.path.join(HERE, "src", "targets.rs"), encoding="utf-8").read()


def write(target, name, data):
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(folder, "seed-" + name), "wb") as f:
        f.write(data)


# ---- signaling ---------------------------------------------------------------------------
messages = {
    "join": {"type": "join", "protocol": 1, "grant": "eyJhbGciOiJIUzI1NiJ9.e30.x", "room": "gm"},
    "resume": {"type": "join", "protocol": 1, "resume": "abc"},
    "offer": {"type": "offer", "sdp": "v=0\r\n", "tracks": [{"mid": "0", "source": "microphone"},
                                                         {"mid": "1", "source": "camera"}]},
    "answer": {"type": "answer", "sdp": "v=0\r\n"},
    "candidate": {"type": "candidate", "candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host",
                                                     "sdpMid": "0", "sdpMLineIndex": 0}},
    "mute": {"type": "mute", "track_id": "TR_4", "muted": True},
    "data": {"type": "data", "text": "hello"},
    "chat": {"type": "chat", "text": "Motion 3 is carried"},
    "hand": {"type": "raise_hand", "raised": True},
    "subscription": {"type": "subscription", "tracks": [{"track_id": "TR_4", "paused": True}]},
    "host-remove": {"type": "host", "action": "remove", "participant_id": "PA_1", "bar": True},
    "host-reorder": {"type": "host", "action": "reorder_queue", "order": ["PA_1", "PA_2"]},
    "host-lock": {"type": "host", "action": "lock", "locked": True},
    "leave": {"type": "leave"},
    "ping": {"type": "ping", "id": 7},
}
for name, msg in messages.items():
    write("signaling", name, json.dumps(msg))

# ---- SDP ---------------------------------------------------------------------------------
offer = re.search(r'pub const REFERENCE_OFFER: &str = "(.*?)";', TARGETS_RS, re.S).group(1)
offer = offer.replace("\\r\n", "\r\n")
assert offer.startswith("v=0\r\n"), offer[:20]
write("sdp", "offer-first", b"\x00" + offer.encode())
write("sdp", "offer-again", b"\x01" + offer.encode())
answer = offer.replace("a=setup:actpass", "a=setup:active")
audio_answer = answer.replace("a=group:BUNDLE 0 1 2", "a=group:BUNDLE 0 1 2 @mid@") + (
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    "c=IN IP4 0.0.0.0\r\n"
    "a=ice-ufrag:fzcl\r\n"
    "a=ice-pwd:fuzzclientpasswordfuzzclient\r\n"
    "a=fingerprint:sha-256 3A:0F:9B:64:C8:1E:2D:55:71:AB:90:4C:D2:EE:13:7F:88:21:5A:C6:B9:04:6E:F1:2C:93:D7:40:5B:A8:1F:66\r\n"
    "a=setup:active\r\n"
    "a=mid:@mid@\r\n"
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n"
    "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n"
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    "a=recvonly\r\n"
    "a=rtcp-mux\r\n"
    "a=rtpmap:111 opus/48000/2\r\n"
    "a=rtcp-fb:111 transport-cc\r\n"
    "a=fmtp:111 minptime=10;useinbandfec=1\r\n"
)
video_answer = answer.replace("a=group:BUNDLE 0 1 2", "a=group:BUNDLE 0 1 2 @mid@") + (
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n"
    "c=IN IP4 0.0.0.0\r\n"
    "a=ice-ufrag:fzcl\r\n"
    "a=ice-pwd:fuzzclientpasswordfuzzclient\r\n"
    "a=fingerprint:sha-256 3A:0F:9B:64:C8:1E:2D:55:71:AB:90:4C:D2:EE:13:7F:88:21:5A:C6:B9:04:6E:F1:2C:93:D7:40:5B:A8:1F:66\r\n"
    "a=setup:active\r\n"
    "a=mid:@mid@\r\n"
    "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n"
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    "a=recvonly\r\n"
    "a=rtcp-mux\r\n"
    "a=rtcp-rsize\r\n"
    "a=rtpmap:96 VP8/90000\r\n"
    "a=rtcp-fb:96 transport-cc\r\n"
    "a=rtcp-fb:96 ccm fir\r\n"
    "a=rtcp-fb:96 nack\r\n"
    "a=rtcp-fb:96 nack pli\r\n"
    "a=rtpmap:97 rtx/90000\r\n"
    "a=fmtp:97 apt=96\r\n"
)
write("sdp", "answer-audio", b"\x02" + audio_answer.encode())
write("sdp", "answer-video", b"\x03" + video_answer.encode())

# ---- datagrams ---------------------------------------------------------------------------
# [mode][source][kind][len u16][bytes]...: mode bit 0 = a valid STUN check first; source
# 0 = the client; kind 0 = raw bytes, 2 = STUN check with these extra attributes, 3 = the
# same with a broken MESSAGE-INTEGRITY.


def record(source, kind, data, addr=b""):
    """source 3 takes an IPv4 address and port (6 bytes) from the input."""
    return bytes([source]) + addr + bytes([kind]) + struct.pack(">H", len(data)) + data


client_hello = bytes.fromhex(
    # DTLS 1.2 record: handshake, epoch 0, seq 0
    "16fefd0000000000000000"
    "0060"  # record length
    "010000540000000000000054"  # ClientHello, length 84, message_seq 0, fragment 0..84
    "fefd" + "11" * 32  # client_version, random
    + "00"  # session id
    + "00"  # cookie
    + "0004c02bc02f"  # cipher suites
    + "0100"  # compression: null
    + "0017"  # extensions length 23
    + "000e0005000200010000"  # use_srtp: SRTP_AES128_CM_HMAC_SHA1_80
    + "000a00040002001d"  # supported_groups: x25519
    + "0017"  # extended_master_secret
    + "0000"
)
srtp = bytes.fromhex("806f1234000003e80000abcd") + bytes(range(40)) + bytes(10)
srtcp = bytes.fromhex("80c800060000abcd") + bytes(24) + bytes.fromhex("80000001") + bytes(10)
write("datagram", "stun-check", bytes([1]) + record(0, 2, b""))
write("datagram", "stun-broken", bytes([0]) + record(2, 3, b"") + record(0, 3, b""))
write("datagram", "client-hello", bytes([1]) + record(0, 0x80 | 5, client_hello))
write("datagram", "srtp-srtcp", bytes([1]) + record(0, 0, srtp) + record(0, 0, srtcp))
write("datagram", "stranger", bytes([0]) + record(3, 0, srtp, addr=bytes([0x0a, 0, 0, 9, 0x13, 0x88])) + record(2, 0, srtp))

# ---- RTP ---------------------------------------------------------------------------------
vp8_key = bytes.fromhex("908005" + "5002009d012a8002680100")
vp9_key = bytes.fromhex("88" + "00112233")
h264_idr = bytes.fromhex("65888400")
h264_stap = bytes.fromhex("18" + "0004" + "67420029" + "0002" + "68ce")
h264_fua = bytes.fromhex("7c85" + "00112233")
av1 = bytes.fromhex("18" + "0a0b0c")
for name, payload in [("vp8-key", vp8_key), ("vp9-key", vp9_key), ("h264-idr", h264_idr),
                      ("h264-stap", h264_stap), ("h264-fua", h264_fua), ("av1-new", av1)]:
    write("rtp", "peek-" + name, payload)


def munger_packet(op, delta, dt, ts):
    return bytes([op, delta & 0xff, dt]) + struct.pack(">I", ts)


# Munger: [0][video][first_out u16][seq u32] then ops.
munger = bytes([0, 1]) + struct.pack(">HI", 100, 5000)
munger += munger_packet(0x22, 1, 20, 1000)  # stream 0, keyframe
munger += munger_packet(0x02, 1, 20, 4000)
munger += bytes([1, 1])  # switch to stream 1
munger += munger_packet(0x62, 1, 20, 9000)  # stream 1, keyframe
munger += bytes([0])  # pause
munger += munger_packet(0x62, 1, 20, 12000)
write("rtp", "munger", munger)


def room_packet(layer, delta, payload, ts):
    op = 4 | (layer << 4)
    return bytes([op, 10, delta & 0xff, len(payload)]) + payload + struct.pack(">I", ts)


# Room: [1][codec][media][seq u16] then ops [op][dt]...
room = bytes([1, 0, 1]) + struct.pack(">H", 1000)
room += room_packet(0, 1, bytes.fromhex("10" + "5002009d012a8002680100"), 0)
room += room_packet(0, 1, bytes.fromhex("1001"), 3000)
room += bytes([1, 5, 2])  # set_layer(sub 2, layer 2)
room += room_packet(2, 1, bytes.fromhex("10" + "5002009d012a0005d00200"), 6000)
room += bytes([2, 5])  # keyframe request
room += bytes([3, 200])  # timeout
room += bytes([0x10, 1])  # pause sub 2
room += room_packet(1, 1, bytes.fromhex("1001"), 9000)
write("rtp", "room-vp8", room)
write("rtp", "room-h264", bytes([1, 2, 1]) + struct.pack(">H", 7) + room_packet(0, 1, h264_stap, 0))

# ---- grants ------------------------------------------------------------------------------
claims = {
    "iss": "fuzz-key", "aud": "plenary", "sub": "alice@social.coop", "name": "Alice",
    "room": "gm", "role": "member", "permissions": {"can_publish": True, "can_subscribe": True},
    "nbf": -5, "exp": 300, "jti": "j1",
}
write("grant", "hs256-valid", bytes([2]) + json.dumps(claims).encode())
guest = dict(claims, role="guest", invited_by="@bob@social.coop", iss="plenary", exp=100)
write("grant", "ed25519-valid", bytes([3]) + json.dumps(guest).encode())
write("grant", "hs256-absolute", bytes([1]) + json.dumps(dict(claims, nbf=1, exp=2)).encode())
write("grant", "header-none", bytes([4]) + b'{"alg":"none","kid":"fuzz-key"}\x00' + json.dumps(claims).encode())
write("grant", "raw", bytes([0]) + b"eyJhbGciOiJIUzI1NiIsImtpZCI6ImZ1enota2V5In0.e30.c2ln")
print("seeds written to", os.path.join(HERE, "corpus"))
