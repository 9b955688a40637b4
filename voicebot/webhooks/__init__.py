"""One blueprint per webhook contract; each translates its events into the conversation core."""
