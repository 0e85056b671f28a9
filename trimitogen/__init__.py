"""trimitogen: run Python functions in other Python processes from Trio.

Open a child with :func:`open_context` and a method such as :func:`local`, then ``await
ctx.call(fn, *args)``.  The child needs nothing installed but Python 3.6 or newer.
"""

from ._containers import buildah as buildah
from ._containers import chroot as chroot
from ._containers import doas as doas
from ._containers import docker as docker
from ._containers import incus as incus
from ._containers import jail as jail
from ._containers import kubectl as kubectl
from ._containers import lxc as lxc
from ._containers import lxd as lxd
from ._containers import machinectl as machinectl
from ._containers import podman as podman
from ._containers import setns as setns
from ._context import Context as Context
from ._context import open_context as open_context
from ._fdio import iter_read as iter_read
from ._fdio import write_all as write_all
from ._files import TreeResult as TreeResult
from ._group import FdLimitError as FdLimitError
from ._group import Group as Group
from ._group import GroupStatistics as GroupStatistics
from ._group import Result as Result
from ._group import ResultStream as ResultStream
from ._group import open_group as open_group
from ._inventory import Inventory as Inventory
from ._inventory import InventoryHost as InventoryHost
from ._inventory import expand_host_range as expand_host_range
from ._inventory import load_inventory as load_inventory
from ._inventory import parse_host_list as parse_host_list
from ._inventory import parse_ini_inventory as parse_ini_inventory
from ._inventory import parse_yaml_inventory as parse_yaml_inventory
from ._latch import Latch as Latch
from ._methods import Method as Method
from ._methods import fork as fork
from ._methods import local as local
from ._methods import ssh as ssh
from ._methods import su as su
from ._methods import sudo as sudo
from ._responder import ImportStats as ImportStats
from ._route import ContextStatistics as ContextStatistics
from ._targets import Target as Target
from ._targets import open_chain as open_chain
from ._targets import parse_target as parse_target
from ._targets import with_python as with_python
from .core.aloop import event_loop as event_loop
from .core.errors import CallError as CallError
from .core.errors import Cancelled as Cancelled
from .core.errors import ChannelError as ChannelError
from .core.errors import ConnectError as ConnectError
from .core.errors import Error as Error
from .core.errors import HostKeyError as HostKeyError
from .core.errors import LatchError as LatchError
from .core.errors import PasswordError as PasswordError
from .core.errors import StreamError as StreamError
from .core.errors import TimeoutError as TimeoutError
from .core.minify import minimize_source as minimize_source
from .core.modules import get_child_modules as get_child_modules
from .core.side import Side as Side
from .core.side import io_op as io_op
from .core.values import register_value_type as register_value_type

__version__ = "0.1.0"
