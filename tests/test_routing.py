"""The route table (trimitogen.core.routing): every trust rule of routing, tested with values.

The tables below model the master (id 0) with two direct children::

    0 ─ link A ─ 1 ─ 3 ─ 5
      │            └ 4
      └ link B ─ 2 ─ 6

and an intermediate (id 3) seen from inside.  Links are opaque keys, compared by identity.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trimitogen.core.routing import RouteTable


class FakeLink:
    """A link key; two links are never the same even with the same name."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return "FakeLink(%s)" % self.name


def tree() -> tuple[RouteTable, FakeLink, FakeLink]:
    table = RouteTable(0)
    a, b = FakeLink("A"), FakeLink("B")
    table.add(1, a, 0)
    table.add(3, a, 1)
    table.add(4, a, 1)
    table.add(5, a, 3)
    table.add(2, b, 0)
    table.add(6, b, 2)
    return table, a, b


# -- building -------------------------------------------------------------------------------------


def test_add_records_link_and_parent() -> None:
    table, a, b = tree()
    assert table.ids() == [1, 2, 3, 4, 5, 6]
    assert len(table) == 6
    assert 5 in table
    assert 7 not in table
    assert table.link_of(5) is a
    assert table.link_of(6) is b
    assert table.link_of(7) is None
    assert table.parent_of(5) == 3
    assert table.parent_of(1) == 0
    assert table.parent_of(7) is None
    assert table.own_id == 0


def test_a_link_may_claim_an_id_it_was_asked_to_start() -> None:
    table, a, _b = tree()
    table.expect(7, a, 5)
    assert 7 not in table
    assert table.claim(7, a) is True
    assert table.link_of(7) is a
    assert table.parent_of(7) == 5


def test_a_link_may_claim_an_id_only_once() -> None:
    table, a, _b = tree()
    table.expect(7, a, 5)
    assert table.claim(7, a) is True
    assert table.claim(7, a) is False
    assert table.link_of(7) is a


def test_a_link_may_not_claim_an_id_nobody_asked_for() -> None:
    table, a, _b = tree()
    assert table.claim(7, a) is False
    assert 7 not in table
    assert table.claim(1, a) is False  # routed already, but never expected


def test_a_link_may_not_claim_an_id_expected_through_another_link() -> None:
    table, a, b = tree()
    table.expect(7, a, 5)
    assert table.claim(7, b) is False
    assert 7 not in table
    # The refusal does not use the expectation up: the right link may still claim it.
    assert table.claim(7, a) is True
    assert table.link_of(7) is a


def test_an_equal_but_different_link_is_another_link() -> None:
    table = RouteTable(0)
    first, second = FakeLink("A"), FakeLink("A")
    table.expect(1, first, 0)
    assert table.claim(1, second) is False
    assert table.is_behind(1, second) is False


# -- who may send as whom -------------------------------------------------------------------------


def test_a_context_is_behind_the_link_its_messages_travel_on() -> None:
    table, a, b = tree()
    for context_id in (1, 3, 4, 5):
        assert table.is_behind(context_id, a)
        assert not table.is_behind(context_id, b)
    assert table.is_behind(6, b)
    assert not table.is_behind(6, a)
    assert not table.is_behind(7, a)
    assert not table.is_behind(0, a)  # no child speaks for this process


def test_an_expected_context_is_behind_its_link_before_it_is_claimed() -> None:
    table, a, b = tree()
    table.expect(7, a, 5)
    assert table.is_behind(7, a)
    assert not table.is_behind(7, b)


def test_a_link_may_only_send_as_contexts_behind_it() -> None:
    table, a, b = tree()
    assert table.refuse_upward(a, 5, 0) is None
    assert table.refuse_upward(b, 6, 0) is None
    assert table.refuse_upward(a, 6, 0) == (
        "claiming to come from context 6, which is not behind it"
    )
    assert table.refuse_upward(b, 1, 0) == (
        "claiming to come from context 1, which is not behind it"
    )
    assert table.refuse_upward(a, 0, 0) == (
        "claiming to come from context 0, which is not behind it"
    )
    assert table.refuse_upward(a, 99, 0) is not None


def test_a_link_may_only_send_upward() -> None:
    table, a, _b = tree()
    # Siblings, their children, itself and its own descendants are all routed by this process.
    for dst in (2, 6, 1, 3, 4, 5):
        assert table.refuse_upward(a, 5, dst) == (
            "addressed to context %d: children may only send upward" % dst
        )
    assert table.refuse_upward(a, 5, 0) is None


def test_an_intermediate_passes_messages_up_towards_the_master() -> None:
    table = RouteTable(3)
    child, other = FakeLink("5"), FakeLink("6")
    table.add(5, child, 3)
    table.add(6, other, 3)
    table.add(7, child, 5)
    assert table.refuse_upward(child, 7, 0) is None  # to the master, above this process
    assert table.refuse_upward(child, 7, 3) is None  # to this process
    assert table.refuse_upward(child, 7, 1) is None  # to another context above
    assert table.refuse_upward(child, 7, 6) is not None  # to a sibling branch
    assert table.refuse_upward(child, 6, 0) is not None  # speaking for the sibling
    assert table.refuse_upward(child, 3, 0) is not None  # speaking for this process


def test_an_expected_context_may_send_upward() -> None:
    table, a, _b = tree()
    table.expect(7, a, 5)
    assert table.refuse_upward(a, 7, 0) is None


# -- who may answer -------------------------------------------------------------------------------


def test_only_the_target_answers_a_request() -> None:
    table, _a, _b = tree()
    assert table.may_answer(5, 5, False)
    for other in (0, 1, 2, 3, 4, 6, 7):
        assert not table.may_answer(other, 5, False), other


def test_an_undeliverable_notice_may_come_from_an_ancestor_of_the_target() -> None:
    table, _a, _b = tree()
    assert table.may_answer(5, 5, True)
    for ancestor in (0, 1, 3):
        assert table.may_answer(ancestor, 5, True), ancestor
    for stranger in (2, 4, 6, 7):
        assert not table.may_answer(stranger, 5, True), stranger


def test_a_descendant_may_not_answer_for_its_ancestor() -> None:
    table, _a, _b = tree()
    assert not table.may_answer(5, 1, True)
    assert not table.may_answer(3, 1, True)
    assert not table.may_answer(6, 2, True)


# -- who may report a context gone ----------------------------------------------------------------


def test_ancestors_may_report_a_context_gone() -> None:
    table, _a, _b = tree()
    assert table.may_report_gone(3, 5)
    assert table.may_report_gone(1, 5)
    assert table.may_report_gone(0, 5)  # this process is above everything it routes
    assert table.may_report_gone(2, 6)


def test_a_context_may_not_report_itself_gone() -> None:
    table, _a, _b = tree()
    for context_id in (1, 2, 3, 4, 5, 6):
        assert not table.may_report_gone(context_id, context_id)


def test_a_sibling_or_descendant_may_not_report_a_context_gone() -> None:
    table, _a, _b = tree()
    assert not table.may_report_gone(4, 3)  # sibling
    assert not table.may_report_gone(4, 5)  # sibling's child
    assert not table.may_report_gone(2, 5)  # another branch
    assert not table.may_report_gone(6, 1)  # another branch, below
    assert not table.may_report_gone(5, 3)  # descendant
    assert not table.may_report_gone(5, 1)  # descendant, two levels
    assert not table.may_report_gone(7, 5)  # unknown


def test_nothing_reports_an_unknown_context_gone() -> None:
    table, _a, _b = tree()
    assert not table.may_report_gone(0, 7)
    assert not table.may_report_gone(1, 7)


def test_this_process_counts_as_ancestor_of_expected_contexts() -> None:
    table, a, _b = tree()
    table.expect(7, a, 5)
    assert table.is_ancestor(0, 7)
    assert table.may_report_gone(0, 7)


def test_is_ancestor_walks_the_parent_chain() -> None:
    table, _a, _b = tree()
    assert table.is_ancestor(3, 5)
    assert table.is_ancestor(1, 5)
    assert table.is_ancestor(0, 5)
    assert not table.is_ancestor(5, 5)
    assert not table.is_ancestor(5, 1)
    assert not table.is_ancestor(4, 5)
    assert not table.is_ancestor(2, 5)
    assert not table.is_ancestor(0, 0)


def test_an_intermediate_knows_no_ancestors_above_itself() -> None:
    table = RouteTable(3)
    child = FakeLink("5")
    table.add(5, child, 3)
    assert table.is_ancestor(3, 5)
    assert not table.is_ancestor(0, 5)
    assert not table.may_report_gone(0, 5)


# -- subtrees and forgetting ----------------------------------------------------------------------


def test_subtree_lists_a_context_and_everything_below_it() -> None:
    table, _a, _b = tree()
    assert table.subtree(1) == [1, 3, 4, 5]
    assert table.subtree(3) == [3, 5]
    assert table.subtree(5) == [5]
    assert table.subtree(2) == [2, 6]
    assert table.subtree(0) == [0, 1, 2, 3, 4, 5, 6]
    assert table.subtree(99) == [99]


def test_forget_removes_the_subtree() -> None:
    table, a, b = tree()
    assert table.forget(3) == [3, 5]
    assert table.ids() == [1, 2, 4, 6]
    assert table.link_of(5) is None
    assert table.parent_of(3) is None
    assert not table.is_behind(5, a)
    assert table.refuse_upward(a, 5, 0) is not None
    assert table.link_of(4) is a
    assert table.link_of(6) is b


def test_forget_returns_only_the_ids_that_were_known() -> None:
    table, _a, _b = tree()
    assert table.forget(99) == []
    assert table.ids() == [1, 2, 3, 4, 5, 6]


def test_forget_drops_pending_expectations_of_the_subtree() -> None:
    table, a, b = tree()
    table.expect(7, a, 5)  # to be started below 5
    table.expect(8, a, 4)  # below 4, which stays
    table.expect(9, b, 6)  # another branch
    table.expect(3, a, 1)  # an id of the subtree itself (started again)
    assert table.forget(3) == [3, 5]
    assert not table.claim(7, a)
    assert not table.claim(3, a)
    assert not table.is_behind(7, a)
    assert table.claim(8, a)
    assert table.claim(9, b)


def test_forget_of_an_expected_id_drops_its_expectation() -> None:
    table, a, _b = tree()
    table.expect(7, a, 5)
    assert table.forget(7) == []
    assert not table.claim(7, a)
    assert not table.is_ancestor(0, 7)


def test_forget_link_removes_every_route_through_it() -> None:
    table, a, b = tree()
    table.expect(7, a, 5)
    table.expect(8, b, 6)
    assert table.forget_link(a) == [1, 3, 4, 5]
    assert table.ids() == [2, 6]
    assert not table.claim(7, a)
    assert not table.is_behind(1, a)
    assert table.claim(8, b)
    assert table.forget_link(a) == []
    assert table.forget_link(FakeLink("unknown")) == []
    assert table.forget_link(b) == [2, 6, 8]
    assert len(table) == 0


# -- cycles ---------------------------------------------------------------------------------------


def cyclic() -> tuple[RouteTable, FakeLink]:
    table = RouteTable(0)
    link = FakeLink("A")
    table.add(5, link, 6)
    table.add(6, link, 7)
    table.add(7, link, 5)
    table.add(8, link, 8)  # its own parent
    return table, link


def test_cycles_in_parent_ids_do_not_loop_in_is_ancestor() -> None:
    table, _link = cyclic()
    assert not table.is_ancestor(9, 5)
    assert not table.is_ancestor(1, 8)
    assert table.is_ancestor(6, 5)
    assert not table.may_report_gone(8, 8)


def test_cycles_in_parent_ids_do_not_loop_in_subtree_or_forget() -> None:
    table, link = cyclic()
    assert table.subtree(5) == [5, 6, 7]
    assert table.subtree(8) == [8]
    assert table.forget(6) == [5, 6, 7]
    assert table.ids() == [8]
    assert table.forget(8) == [8]
    table, link = cyclic()
    assert table.forget_link(link) == [5, 6, 7, 8]


IDS = st.integers(min_value=0, max_value=12)


@settings(max_examples=200, deadline=None)
@given(
    edges=st.lists(st.tuples(IDS, IDS, st.booleans()), max_size=20),
    victim=IDS,
    asker=IDS,
)
def test_arbitrary_parent_ids_never_loop_and_forget_removes_the_subtree(
    edges: list[tuple[int, int, bool]], victim: int, asker: int
) -> None:
    table = RouteTable(0)
    links = (FakeLink("A"), FakeLink("B"))
    for context_id, parent_id, second in edges:
        if context_id:
            table.add(context_id, links[second], parent_id)
    for context_id in range(13):
        table.is_ancestor(asker, context_id)
        table.may_report_gone(asker, context_id)
        table.may_answer(asker, context_id, True)
        assert context_id in table.subtree(context_id)
    doomed = table.subtree(victim)
    known_before = set(table.ids())
    assert table.forget(victim) == sorted(known_before & set(doomed))
    assert set(table.ids()) == known_before - set(doomed)
    for link in links:
        table.forget_link(link)
    assert len(table) == 0


def test_an_expected_context_has_its_parent_as_ancestor() -> None:
    table, a, _b = tree()
    table.expect(7, a, 1)
    assert table.parent_of(7) == 1
    assert table.is_ancestor(1, 7)
    assert table.may_report_gone(1, 7)


def test_forgetting_drops_expectations_chained_below_an_expectation() -> None:
    table, a, _b = tree()
    table.expect(7, a, 1)
    table.expect(8, a, 7)
    table.forget(1)
    assert not table.claim(8, a)
    assert not table.claim(7, a)
