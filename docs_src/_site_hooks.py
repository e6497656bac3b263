"""MkDocs hooks of the site (mkdocs.yml ``hooks:``)."""

from __future__ import annotations

import re
from typing import Any

# The docstrings cross-reference in Sphinx's style (:class:`Codec`); mkdocstrings renders
# the name as code and leaves the role's prefix, which the reader does not need.
_ROLE = re.compile(r":(?:class|meth|func|attr|exc|mod|data|obj):(?=<code>)")


def on_page_content(html: str, **kwargs: Any) -> str:
    return _ROLE.sub("", html)
