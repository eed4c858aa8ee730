"""``batchframe ui``: a local web app to start runs, follow them live, and steer them (extra ``ui``).

Nothing is imported here: ``batchframe.ui.server.serve`` (what the CLI calls) brings in Starlette,
uvicorn and Jinja2. The modules:

- ``server``: bind the port, print the URL with its token, open the browser, run uvicorn;
- ``app``: ``create_app(settings)``, the routes and views;
- ``_security``: the middleware (Host check, token-to-cookie, CSRF and Origin checks, CSP);
- ``_forms`` (+ ``_describe``, its child process): a project's parameters as a form;
- ``_launch``: ``batchframe exec``, ``resume`` and ``retry`` as processes of their own;
- ``_runs_view``: what a run folder says (status, counts, failures, log tail).
"""
