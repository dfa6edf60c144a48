"""The one way pictures are made: matplotlib without a display, a figure to PNG bytes.

Drift reports and candidates carry pictures as metadata (see ``defs.metadata.markdown_image``). Only the
runs that draw import this module: matplotlib never loads with the code location or the sensors.
"""

import contextlib
import io

import matplotlib

matplotlib.use("Agg")  # files only: never a display, safe in daemon and run worker processes
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plt", "drawing", "png_of"]


@contextlib.contextmanager
def drawing(figure):
    """Close the figure if drawing it fails (png_of closes it otherwise)."""
    try:
        yield figure
    except BaseException:
        plt.close(figure)
        raise


def png_of(figure, dpi: int = 72) -> bytes:
    """The figure as PNG bytes; the figure is closed (matplotlib keeps open figures alive otherwise)."""
    try:
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=dpi)
        return buffer.getvalue()
    finally:
        plt.close(figure)

