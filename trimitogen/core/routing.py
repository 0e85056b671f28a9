"""Who is behind which link, and who may say what: every trust rule of routing, in one table.

Each process that talks to children (the master, and every intermediate context) keeps one
:class:`RouteTable`.  A *link* is whatever object the process uses for one direct child (an opaque
key here).  The table records, for every context below this process, the link its messages travel
on and its parent's id, plus the ids a link was asked to start but has not announced yet.

The rules (see ``docs/security.rst``):

* trust flows downward: a message arriving on a link may only claim to come from a context behind
  that link, and may only go upward (to this process, or further up), never to a context this
  process routes to;
* a link may announce only a context it was asked to start, once;
* an answer to a request is taken only from the context asked, except an undeliverable-message
  notice, which may come from any ancestor of that context;
* only an ancestor of a context may report it gone.

The table is pure data: no I/O, no threads, and it runs on every supported child Python.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple


class RouteTable:
    """Routes of one process to the contexts below it.  ``own_id`` is this process's context id."""

    def __init__(self, own_id: int) -> None:
        self.own_id = own_id
        self._link: Dict[int, Any] = {}
        self._parent: Dict[int, int] = {}
        #: Ids a link was asked to start, not yet announced: id -> (link, parent id).
        self._expected: Dict[int, Tuple[Any, int]] = {}

    def __contains__(self, context_id: int) -> bool:
        return context_id in self._link

    def __len__(self) -> int:
        return len(self._link)

    def ids(self) -> List[int]:
        return sorted(self._link)

    # -- building ------------------------------------------------------------------------------
    def add(self, context_id: int, link: Any, parent_id: int) -> None:
        """A context now routed through ``link`` (a direct child has ``parent_id == own_id``)."""
        self._link[context_id] = link
        self._parent[context_id] = parent_id

    def expect(self, context_id: int, link: Any, parent_id: int) -> None:
        """``link`` was asked to start ``context_id`` below ``parent_id``; it may announce it."""
        self._expected[context_id] = (link, parent_id)

    def claim(self, context_id: int, link: Any) -> bool:
        """``link`` announces ``context_id``: True (once) if it was asked to start it."""
        expected = self._expected.get(context_id)
        if expected is None or expected[0] is not link:
            return False
        del self._expected[context_id]
        self.add(context_id, link, expected[1])
        return True

    # -- questions -----------------------------------------------------------------------------
    def link_of(self, context_id: int) -> Any:
        """The link ``context_id``'s messages travel on, or None."""
        return self._link.get(context_id)

    def parent_of(self, context_id: int) -> Optional[int]:
        """The parent of a routed or expected context, or None."""
        parent = self._parent.get(context_id)
        if parent is None and context_id in self._expected:
            parent = self._expected[context_id][1]
        return parent

    def is_behind(self, context_id: int, link: Any) -> bool:
        """True if messages from ``context_id`` may arrive on ``link`` (routed or expected)."""
        if context_id in self._link and self._link[context_id] is link:
            return True
        expected = self._expected.get(context_id)
        return expected is not None and expected[0] is link

    def is_ancestor(self, ancestor: int, context_id: int) -> bool:
        """True if ``ancestor`` is above ``context_id`` (this process counts for everything)."""
        if ancestor == self.own_id:
            return context_id in self._link or context_id in self._expected
        seen = 0
        parent = self.parent_of(context_id)
        while parent is not None and seen <= len(self._parent) + len(self._expected):
            if parent == ancestor:
                return True
            parent = self.parent_of(parent)
            seen += 1
        return False

    def refuse_upward(self, link: Any, src: int, dst: int) -> Optional[str]:
        """Why a message from ``src`` to ``dst`` arriving on ``link`` must be dropped, or None.

        It must come from a context behind ``link``, and go to this process or above it: a child
        may not address its siblings, their children, or contexts below itself through us.
        """
        if not self.is_behind(src, link):
            return "claiming to come from context %d, which is not behind it" % src
        if dst != self.own_id and dst in self._link:
            return "addressed to context %d: children may only send upward" % dst
        return None

    def may_answer(self, src: int, target: int, undeliverable: bool) -> bool:
        """May ``src`` answer a request sent to ``target``?"""
        if src == target:
            return True
        return undeliverable and self.is_ancestor(src, target)

    def may_report_gone(self, reporter: int, context_id: int) -> bool:
        return reporter != context_id and self.is_ancestor(reporter, context_id)

    def subtree(self, context_id: int) -> List[int]:
        """``context_id`` and every context below it that this table knows (routed or expected),
        in id order."""
        parents = dict(self._parent)
        for other, (_link, parent) in self._expected.items():
            parents.setdefault(other, parent)
        found = {context_id}
        grew = True
        while grew:
            grew = False
            for other, parent in parents.items():
                if parent in found and other not in found:
                    found.add(other)
                    grew = True
        return sorted(found)

    # -- forgetting ----------------------------------------------------------------------------
    def forget(self, context_id: int) -> List[int]:
        """Drop ``context_id`` and everything below it; returns the ids that were known."""
        doomed = self.subtree(context_id)
        known = [i for i in doomed if i in self._link]
        for other in doomed:
            self._link.pop(other, None)
            self._parent.pop(other, None)
        for other in doomed:
            self._expected.pop(other, None)
        return known

    def forget_link(self, link: Any) -> List[int]:
        """Drop every route through ``link`` (its child is gone); returns their ids."""
        ids = sorted(i for i, other in self._link.items() if other is link)
        for context_id in ids:
            self._link.pop(context_id, None)
            self._parent.pop(context_id, None)
        for other, (expected_link, _parent) in list(self._expected.items()):
            if expected_link is link:
                del self._expected[other]
        return ids
