#!/usr/bin/python3
"""A real RTSP camera for tests and demos: GStreamer's RTSP server on 127.0.0.1.

Serves an H.264 MP4 file at rtsp://127.0.0.1:PORT/file, played once at real-time pace from the
start for each client, and a live test pattern at /pattern. Prints "ready" when it listens.
Needs Debian's gstreamer1.0-rtsp, gir1.2-gst-rtsp-server-1.0, python3-gi and the
gstreamer1.0-plugins-{base,good,bad,ugly} packages (scripts/setup installs them); run it with
the system python (/usr/bin/python3), which is the one python3-gi is built for.
"""

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--file", help="H.264 MP4 served at /file")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    if args.file:
        mounts.add_factory("/file", factory(
            f'( filesrc location="{args.file}" ! qtdemux ! h264parse config-interval=-1 '
            "! rtph264pay name=pay0 pt=96 config-interval=-1 )"))
    mounts.add_factory("/pattern", factory(
        "( videotestsrc is-live=true ! video/x-raw,width=640,height=360,framerate=10/1 "
        "! x264enc tune=zerolatency key-int-max=20 ! rtph264pay name=pay0 pt=96 config-interval=-1 )"))
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{args.port}")
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    print("ready", flush=True)
    loop.run()


def factory(launch: str) -> GstRtspServer.RTSPMediaFactory:
    f = GstRtspServer.RTSPMediaFactory()
    f.set_launch(launch)
    # Each client gets its own pipeline, so a file plays from its start for every connection.
    f.set_shared(False)
    return f


if __name__ == "__main__":
    main()
