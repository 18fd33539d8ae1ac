"""The try-it surface: the documentation page (/docs), the persona catalogue (/docs/personas),
their templates, scripts and styles, and the example values they are pre-filled with.

May import: production/, population/, settings. Not api/ (the page calls the API over HTTP, as
a user does), not the other surfaces.
"""
