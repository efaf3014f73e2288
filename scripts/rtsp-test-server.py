#!/usr/bin/python3
"""An RTSP server for the tests (GStreamer's RTSP server through Debian's python3-gi bindings):
H.264 encoded live from a folder of same-size JPEG frames, looping, on
rtsp://127.0.0.1:PORT/cam. Prints "ready" once it listens. Needs gir1.2-gst-rtsp-server-1.0,
gstreamer1.0-plugins-good (jpegdec, rtph264pay) and gstreamer1.0-plugins-ugly (x264enc).

    scripts/rtsp-test-server.py --port 8554 --frames '/tmp/frames/f%03d.jpg' --fps 5
"""
import argparse

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--port", required=True)
parser.add_argument("--frames", required=True, help="a printf pattern of JPEG files, from 0")
parser.add_argument("--fps", type=int, default=5)
args = parser.parse_args()

Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(args.port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    f"( multifilesrc location={args.frames} index=0 loop=true caps=image/jpeg,framerate={args.fps}/1 "
    "! jpegdec ! videoconvert ! video/x-raw,format=I420 "
    f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.fps} bitrate=800 "
    "! rtph264pay name=pay0 pt=96 config-interval=1 )"
)
factory.set_shared(True)
server.get_mount_points().add_factory("/cam", factory)
if server.attach(None) == 0:
    raise SystemExit(f"cannot listen on port {args.port}")
print("ready", flush=True)
GLib.MainLoop().run()
