"""ConversationRelay, as Twilio and Telnyx both speak it: one WebSocket per call, opened with the ticket its
signed webhook gave (``handshake``), served as a conversation (``session``)."""
