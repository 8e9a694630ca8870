"""Everything TikTok Shop: signatures, wire formats, the Open API client.

TikTok's field names and error codes live in this package only.
"""
