"""Every HTTP request voicebot makes of its own: the model, VoIPBin's REST API, the operator's tools, the
caller context and record deliveries, through one client on libcurl (``HTTP``, with pycurl), each request held to the
thread's deadline, its body to a cap, sent once, and its connection reused only clean.

No module of voicebot opens a socket for HTTP or parses an answer itself; the
address policy for the operator's endpoints (``AddressPolicy``) is applied
here, to the address actually connected to.
"""

from .addresses import AddressPolicy, is_loopback_host, operator_url_problem
from .answers import Response
from .client import HTTP
from .cutoff import Cutoff
from .errors import AddressRefused, BodyTooLarge, EgressError, EgressTimeout
from .transfer import Stream

__all__ = ["HTTP", "AddressPolicy", "AddressRefused", "BodyTooLarge", "Cutoff", "EgressError", "EgressTimeout",
           "Response", "Stream", "is_loopback_host", "operator_url_problem"]
