"""Version check shared by the integrations: they patch private code paths of other
libraries, so a version they were not tested with gets a warning, not silence."""

from __future__ import annotations

import functools
import warnings
from importlib import metadata


@functools.cache
def _installed(dist: str) -> str | None:
    try:
        return metadata.version(dist)  # scans site-packages: milliseconds, so once
    except metadata.PackageNotFoundError:
        return None


def check_version(dist: str, tested: tuple[str, ...]) -> str:
    """Return the installed version of distribution `dist`; warn (UserWarning) when it is
    not one of `tested`. Raises ImportError naming the pip package when it is missing."""
    version = _installed(dist)
    if version is None:
        raise ImportError(f"{dist} is not installed (pip install {dist})")
    if version not in tested:
        warnings.warn(
            f"wmkernels.integrations was tested with {dist} {', '.join(tested)}; "
            f"{version} is installed: the patched code paths may have changed, compare "
            "outputs before relying on it",
            UserWarning,
            stacklevel=3,
        )
    return version
