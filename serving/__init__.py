"""The online service (`linnet serve`): the batch pipeline's stages for a few products per request, so a
product gets the same row online as in the nightly table.

    validation.py   request body → validated products, or an error naming the field
    batcher.py      concurrent requests → one model call (bounded queue, max batch, max wait)
    categorizer.py  embed → first pass → store context → categorize → row, as `linnet score` does
    app.py          aiohttp routes, JSON errors, readiness, draining on SIGTERM
    command.py      `linnet serve` flags
"""
