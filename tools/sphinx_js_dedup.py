"""Sphinx extension: write each inline ``<script>`` of a page once.

Sphinx 7.4 (the last Sphinx that jupyter-book 1 accepts) duplicates every inline script that an
extension adds with ``app.add_js_file(None, body=...)`` once the builder exists: the builder
stores it under the file name ``None`` and again, from the registry, under ``''``, and the two
do not compare equal (fixed in Sphinx 8.2, sphinx-doc/sphinx#13402). sphinx-thebe's script
declares ``const THEBE_JS_URL``, so its second copy throws "Identifier 'THEBE_JS_URL' has
already been declared" in the console of every page (sphinx-togglebutton's duplicate is
harmless). This extension drops the duplicates while each page is rendered.

Loaded by ``_config.yml`` (``sphinx: local_extensions: sphinx_js_dedup: tools/``); the browser
test (``tests/browser/test_browser.py``) fails if the error comes back.
"""

from __future__ import annotations


def _dedup_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        attributes = getattr(js, "attributes", {})
        key = (getattr(js, "filename", js) or "", getattr(js, "priority", 500),
               tuple(sorted(attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique


def setup(app):
    app.connect("html-page-context", _dedup_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
