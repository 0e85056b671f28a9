"""Sphinx configuration for the trimitogen documentation."""

from __future__ import annotations

import os
import sys

# Let autodoc import the package from this checkout without installing it.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import trimitogen

project = "trimitogen"
author = "the trimitogen authors"
project_copyright = "the trimitogen authors"
release = trimitogen.__version__
version = ".".join(release.split(".")[:2])

extensions = ["sphinx.ext.autodoc"]

exclude_patterns = ["_build"]
default_role = "code"
primary_domain = "py"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True

html_theme = "alabaster"
html_title = "trimitogen %s" % release
