# Jupyter server configuration for this project, found through JUPYTER_CONFIG_PATH (set by `npm run lab` and
# `npm run browser-check`; nothing in your global Jupyter config is touched).
#
# JupyterLab's plotly renderer (the `plotly` pip package) stores a PNG snapshot of every plot it draws next to the
# figure JSON, which makes up most of a saved notebook: notebook 5's four plots are ~12 KB of figure JSON and
# ~280 KB of snapshots at a 1280-px window, more on a wider one. The figure JSON is what the renderer draws from, so
# the snapshot is dropped when a notebook is saved: outputs that carry the figure JSON keep everything else.

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


c = get_config()  # noqa: F821 (defined by the config loader)
c.FileContentsManager.pre_save_hook = drop_plotly_snapshots
