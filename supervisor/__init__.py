"""The actor runtime: bounded mailboxes, child specs, supervisors. Knows nothing of telephony.

Erlang/OTP's vocabulary (permanent/transient/temporary children, one_for_one/one_for_all/
rest_for_one, restart intensity, significant children) on trio's mechanics (nurseries, cancel
scopes, ``nursery.start``). See `supervisor.supervisor` for the semantics in one place.
"""

from .cleanup import cleanup_scope
from .events import (
    ChildExited,
    ChildRestarting,
    ChildStarted,
    IntensityExceeded,
    SupervisorEvent,
    SupervisorStopped,
)
from .mailbox import (
    MailboxFull,
    MailboxReceiver,
    MailboxSender,
    MailboxStatistics,
    Overflow,
    open_mailbox,
)
from .outcomes import (
    ChildInfo,
    ChildStartFailed,
    ChildState,
    SupervisorError,
    SupervisorExit,
    SupervisorGaveUp,
    SupervisorNotRunning,
)
from .spec import AutoShutdown, Backoff, ChildSpec, CloneableChannel, Restart, Strategy, SupervisorSpec
from .nesting import supervisor_child
from .supervisor import Supervisor

__all__ = [
    "AutoShutdown",
    "Backoff",
    "ChildExited",
    "ChildInfo",
    "ChildRestarting",
    "ChildSpec",
    "ChildStartFailed",
    "ChildStarted",
    "ChildState",
    "CloneableChannel",
    "IntensityExceeded",
    "MailboxFull",
    "MailboxReceiver",
    "MailboxSender",
    "MailboxStatistics",
    "Overflow",
    "Restart",
    "Strategy",
    "Supervisor",
    "SupervisorError",
    "SupervisorEvent",
    "SupervisorExit",
    "SupervisorGaveUp",
    "SupervisorNotRunning",
    "SupervisorSpec",
    "SupervisorStopped",
    "cleanup_scope",
    "open_mailbox",
    "supervisor_child",
]
