# The C module behind ``signal``, used by the child runtime to avoid importing enum at start-up.
from typing import Any

SIGURG: int
SIGTERM: int
SIGKILL: int
SIG_IGN: int
SIG_DFL: int

def signal(signalnum: int, handler: Any, /) -> Any: ...
def pthread_kill(thread_id: int, signalnum: int, /) -> None: ...
