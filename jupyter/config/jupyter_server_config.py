# Jupyter server configuration for this project, found through JUPYTER_CONFIG_PATH (set by `npm run lab` and
# `npm run browser-check`; nothing in your global Jupyter config is touched).
#
# Saved notebooks keep plotly figures as JSON only (no PNG snapshots): the pre-save hook lives in
# cifar10_notebook_hooks.py beside this file, a server extension that registers it once (see there for why not
# `c.FileContentsManager.pre_save_hook`, which warned on every start).
import os
import sys

# This file is executed once per app that loads config (the server, then each extension): keep every step idempotent.
_here = os.path.dirname(os.path.abspath(__file__))  # noqa: F821 (__file__ is set by the config loader)
if _here not in sys.path:
    sys.path.insert(0, _here)

c = get_config()  # noqa: F821 (defined by the config loader)
c.ServerApp.jpserver_extensions.update({"cifar10_notebook_hooks": True})
