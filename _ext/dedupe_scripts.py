"""Sphinx extension: drop duplicate <script> entries from each page's context.

With Sphinx 7.4, sphinx-thebe's inline configuration script is registered twice
(once with filename None, once with ''), and the second copy is a browser console
error ("Identifier 'THEBE_JS_URL' has already been declared").  This keeps the
first of each identical script.
"""


def _dedupe(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (
            str(getattr(script, "filename", script) or ""),
            tuple(sorted(getattr(script, "attributes", {}).items())),
        )
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _dedupe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
