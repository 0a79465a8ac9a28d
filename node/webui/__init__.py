"""The web UI: pages the daemon serves on loopback, over the same API the CLI calls.

Server-rendered HTML (Jinja2, autoescaped) with htmx for the live parts, served by hypercorn
on the daemon's own trio loop through Starlette (both run on trio via anyio): no second
process, no separate backend, nothing fetched from the internet (htmx is vendored in
``static/``), no Node build step. A page calls the daemon's API methods in process, as the
local user, so it can show nothing the CLI could not.
"""
