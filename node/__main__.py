"""``python -m peerlight.node``: the daemon process.

It ends with ``os._exit`` once ``main`` has shut the daemon down (catalog closed, lock released,
logs flushed): model loads and embedding batches still running are abandoned to their
threads at shutdown, and letting the interpreter tear itself down around a thread that is
inside torch can abort the process. Nothing is left to clean up at that point.
"""

import logging
import os
import sys

from .main import main

code = main()
logging.shutdown()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
