"""A Plenary participant built on aiortc, a WebRTC stack that is not a browser, driven only
by the documented protocol (docs/protocol.md) — as a new integrator would write one.

It joins with a grant, builds one RTCPeerConnection with the welcome's ICE servers and
`max-bundle`, creates the `plenary` data channel, publishes a microphone and a camera
(silence and a small synthetic picture) as `sendonly` transceivers, offers, answers the
server's offers (mapping each m-line to a remote track with the offer's `tracks`), and
counts the audio and video frames it decodes from each participant.

It reports on stdout, one JSON object per line:
  {"event": "welcome", "participant_id": ...}
  {"event": "answer", "sections": [{"mid", "candidates", "end_of_candidates"}]}
  {"event": "connection", "state": ...}
  {"event": "receiving", "from": {participant_id: {"audio": frames, "video": frames}}}
  {"event": "left", "closed_by_server": bool}
On a line `leave` on stdin it says `leave`, waits for the server to close the socket, then
closes its peer connection (the order a careful client uses). Exits 0 after leaving, 1 on
any failure or after --timeout seconds.
"""

import argparse
import asyncio
import fractions
import json
import sys
import time

import websockets
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from av import VideoFrame

PROTOCOL = 1


def report(**event):
    print(json.dumps(event), flush=True)


class SmallPicture(VideoStreamTrack):
    """A 320x240 picture at 15 frames a second (aiortc's default is 640x480 at 30)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    async def recv(self):
        await asyncio.sleep(1 / 15)
        frame = VideoFrame(width=320, height=240)
        for plane in frame.planes:
            plane.update(bytes([(self.count * 7) % 256]) * plane.buffer_size)
        frame.pts = self.count * 6000
        frame.time_base = fractions.Fraction(1, 90000)
        self.count += 1
        return frame


def sections_of(sdp):
    """Per m-section of an SDP: its mid, its candidates and whether they are complete."""
    out = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            out.append({"mid": None, "candidates": 0, "end_of_candidates": False})
        elif out and line.startswith("a=mid:"):
            out[-1]["mid"] = line[len("a=mid:"):]
        elif out and line.startswith("a=candidate:"):
            out[-1]["candidates"] += 1
        elif out and line == "a=end-of-candidates":
            out[-1]["end_of_candidates"] = True
    return out


class Participant:
    def __init__(self, ws, publish):
        self.ws = ws
        self.publish = publish
        self.pc = None
        self.mid_map = {}  # mid -> {"track_id", "participant_id"}
        self.frames = {}  # participant_id -> {"audio": n, "video": n}
        self.making_offer = False
        self.closed = asyncio.Event()

    async def send(self, msg):
        await self.ws.send(json.dumps(msg))

    async def start(self, welcome):
        servers = [
            RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
            for s in welcome.get("ice_servers", [])
        ]
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers, bundlePolicy="max-bundle"))

        @self.pc.on("connectionstatechange")
        async def on_state():
            report(event="connection", state=self.pc.connectionState)

        @self.pc.on("track")
        def on_track(track):
            asyncio.ensure_future(self.consume(track))

        self.pc.createDataChannel("plenary")
        tracks = []
        if self.publish:
            for source, track in (("microphone", AudioStreamTrack()), ("camera", SmallPicture())):
                transceiver = self.pc.addTransceiver(track, direction="sendonly")
                tracks.append((transceiver, source))
        self.making_offer = True
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.making_offer = False
        await self.send({
            "type": "offer",
            "sdp": self.pc.localDescription.sdp,
            "tracks": [{"mid": t.mid, "source": source} for t, source in tracks],
        })

    async def consume(self, track):
        """Counts decoded frames, attributed through the server's mid mapping."""
        transceiver = next((t for t in self.pc.getTransceivers() if t.receiver.track is track), None)
        while True:
            try:
                await track.recv()
            except Exception:
                return
            mid = transceiver.mid if transceiver else None
            mapped = self.mid_map.get(mid)
            if not mapped:
                continue
            counts = self.frames.setdefault(mapped["participant_id"], {"audio": 0, "video": 0})
            counts[track.kind] += 1

    async def on_message(self, msg):
        kind = msg.get("type")
        if kind == "answer":
            report(event="answer", sections=sections_of(msg["sdp"]))
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="answer"))
        elif kind == "offer":
            if self.making_offer or self.pc.signalingState != "stable":
                return  # glare: ours wins, the server offers again (protocol §2.4)
            self.mid_map = {t["mid"]: t for t in msg.get("tracks", [])}
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="offer"))
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            await self.send({"type": "answer", "sdp": self.pc.localDescription.sdp})
        elif kind == "error":
            report(event="error", code=msg.get("code"), message=msg.get("message"))


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ws", required=True, help="ws:// or wss:// URL of /rtc")
    ap.add_argument("--grant", required=True)
    ap.add_argument("--no-publish", action="store_true")
    ap.add_argument("--timeout", type=float, default=120)
    args = ap.parse_args()
    deadline = time.monotonic() + args.timeout

    async with websockets.connect(args.ws, max_size=2**21) as ws:
        await ws.send(json.dumps({"type": "join", "protocol": PROTOCOL, "grant": args.grant}))
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 20))
        if welcome.get("type") != "welcome":
            report(event="refused", message=welcome)
            return 1
        report(event="welcome", participant_id=welcome["me"]["id"])
        p = Participant(ws, not args.no_publish)
        await p.start(welcome)

        leave = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_stdin():
            line = sys.stdin.readline()
            if not line or line.strip() == "leave":
                leave.set()

        loop.add_reader(sys.stdin, on_stdin)

        async def reader():
            async for raw in ws:
                await p.on_message(json.loads(raw))
            p.closed.set()

        async def pinger():
            n = 0
            while True:
                await asyncio.sleep(1)
                n += 1
                report(event="receiving", **{"from": p.frames})
                if n % 10 == 0:
                    await p.send({"type": "ping", "id": n})

        tasks = [asyncio.ensure_future(reader()), asyncio.ensure_future(pinger())]
        try:
            remaining = deadline - time.monotonic()
            await asyncio.wait_for(leave.wait(), max(1, remaining))
        except asyncio.TimeoutError:
            report(event="timeout")
            return 1
        await p.send({"type": "leave"})
        try:
            await asyncio.wait_for(p.closed.wait(), 10)
            closed_by_server = True
        except asyncio.TimeoutError:
            closed_by_server = False
        await p.pc.close()
        for t in tasks:
            t.cancel()
        report(event="left", closed_by_server=closed_by_server)
        return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
