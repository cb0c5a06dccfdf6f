"""The pure routing core: numbers, matching, the attempt plan and the outcome policy.

No I/O library is imported here (asyncio, redis, aiohttp, yaml): a test enforces it.
"""
