"""``python -m voicebot.cli``: the Procfile's way in."""

import sys

from . import main

sys.exit(main())
