"""Import ASPIRE without its side effects on the caller's process and working folder.

A plain ``import aspire`` writes ``logs/aspire-<time>.log`` (and, on errors, ``aspire.err.log``)
into the current folder, replaces ``sys.excepthook``, sets the root logger to DEBUG with a console
handler on stdout, and disables every logger created before it. :func:`import_aspire` points ASPIRE
at a configuration of ours (logs in the temporary folder, no exception hook, warnings only) and
restores the logging state afterwards. Every CRISP module imports ASPIRE through it.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

_CONFIG = """\
logging:
    log_dir: {log_dir}
    log_exceptions: 0
    tqdm_disable: True
    console_level: WARNING
    log_file_level: WARNING
"""


def configure_aspire_environment() -> None:
    """Point ASPIRE at CRISP's configuration (unless the user set ``ASPIREDIR``); cheap, no import.

    Called when :mod:`crisp` is imported, so that even a direct ``import aspire`` afterwards keeps
    its logs out of the working folder and leaves ``sys.excepthook`` alone.
    """
    if "ASPIREDIR" in os.environ:
        return
    config_dir = Path(tempfile.gettempdir()) / f"crisp-aspire-{os.getuid() if hasattr(os, 'getuid') else 0}"
    config_dir.mkdir(parents=True, exist_ok=True)
    config_file = config_dir / "config.yaml"
    text = _CONFIG.format(log_dir=(config_dir / "logs").as_posix())
    if not config_file.is_file() or config_file.read_text() != text:
        config_file.write_text(text)
    os.environ["ASPIREDIR"] = str(config_dir)


def import_aspire() -> ModuleType:
    """Import and return the ``aspire`` package, configured not to touch the working folder."""
    if "aspire" in sys.modules:
        return sys.modules["aspire"]
    configure_aspire_environment()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_disabled = {name: lg.disabled for name, lg in logging.root.manager.loggerDict.items()
                      if isinstance(lg, logging.Logger)}
    saved_hook = sys.excepthook
    import aspire

    for handler in list(root.handlers):
        if handler not in saved_handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in saved_handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(saved_level)
    for name, disabled in saved_disabled.items():
        logging.getLogger(name).disabled = disabled
    sys.excepthook = saved_hook
    return aspire
