"""kickit: a neural stereo kick-drum generator you play live.

Importing any part of kickit (``kickit.*``) first switches off onnxruntime's usage telemetry for this process
and the processes it starts, before onnxruntime is imported anywhere in the package: pip builds of
onnxruntime collect usage events in a database under the user's cache folder and start a thread that tries to
upload them over the network about ten seconds after start and every few seconds after. A music tool has no
business sending anything anywhere; on a live rig that thread also did DNS lookups and database writes in the
bridge and in each render process, and its first upload attempt added ~0.7 MiB to each of those processes
during play (measured: docs/reliability.md). ``ORT_DISABLE_TELEMETRY`` set by the user is respected.
"""

import os

__version__ = "0.1.0"

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
