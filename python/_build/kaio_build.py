"""Build backend: setuptools' own, found offline.

pip builds in an isolated environment and would download the
`build-system.requires` from an index; with none reachable that fails. The
package needs nothing but setuptools, which the interpreter has (Debian's
python3-setuptools), so the isolated build borrows the interpreter's copy.
"""

import site
import sys

try:
    from setuptools import build_meta as _meta  # noqa: F401
except ImportError:
    for path in site.getsitepackages([sys.base_prefix, sys.prefix]):
        if path not in sys.path:
            sys.path.append(path)
    from setuptools import build_meta as _meta  # noqa: F401

from setuptools.build_meta import *  # noqa: E402,F401,F403


# setuptools asks for `wheel` here, which pip would download; the
# interpreter's python3-wheel is on the borrowed path already.
def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []
