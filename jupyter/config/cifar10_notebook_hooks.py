"""A Jupyter server extension of this project (enabled by jupyter_server_config.py beside it).

JupyterLab's plotly renderer (the `plotly` pip package) stores a PNG snapshot of every plot it draws next to the
figure JSON, which makes up most of a saved notebook: notebook 5's four plots are ~12 KB of figure JSON and ~280 KB
of snapshots at a 1280-px window, more on a wider one. The figure JSON is what the renderer draws from, so the
snapshot is dropped when a notebook is saved: outputs that carry the figure JSON keep everything else.

The hook is registered here, once per server, rather than set as `FileContentsManager.pre_save_hook` in the config
file: Jupyter applies a config file again when each server extension (JupyterLab, ...) loads, and setting that trait
a second time warns "UserWarning: Overriding existing pre_save_hook" on every `npm run lab`.
"""

PLOTLY_MIME = "application/vnd.plotly.v1+json"


def drop_plotly_snapshots(model, **kwargs):
    """pre_save_hook: remove image/png from outputs that also hold a plotly figure."""
    if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    for cell in model["content"].get("cells", []):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            data = output.get("data")
            if isinstance(data, dict) and PLOTLY_MIME in data:
                data.pop("image/png", None)


def _jupyter_server_extension_points():
    return [{"module": __name__}]


def _load_jupyter_server_extension(serverapp):
    serverapp.contents_manager.register_pre_save_hook(drop_plotly_snapshots)
