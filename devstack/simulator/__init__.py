"""A simulator of the TikTok Shop Open API and Shipium's label API, for the devstack and tests."""
