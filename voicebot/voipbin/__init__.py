"""Speaking the real VoIPBin platform: signed events in, speech out through its REST API."""
