from drledger.holdback import HeldBack, Reference, held_behind

W = {
    1: [("e1", ("customer", "7"))],
    2: [("e2", ("order", "100"))],
    3: [("e3", ("customer", "8"))],
    4: [("e4", ("customer", "7"))],
    5: [("e5", ("order_line", "9"))],
}
R = {
    2: [Reference("order_customer_id_fk", ("customer", "7"))],
    5: [Reference("line_order_id_fk", ("order", "100"))],
}


def test_child_of_a_held_back_row_is_held_behind_it_by_constraint_name() -> None:
    holds = held_behind([1, 2, 3, 4, 5], {1}, W, R)
    assert holds[2].text() == (
        "held back behind event e1 (txid 1, customer key 7): "
        "it references that row through order_customer_id_fk"
    )
    assert 3 not in holds


def test_a_later_write_of_the_same_row_is_held_back() -> None:
    holds = held_behind([1, 2, 3, 4, 5], {1}, W, R)
    assert holds[4].reason == "it writes the same row"
    assert (holds[4].behind_event, holds[4].behind_txid) == ("e1", 1)


def test_dependents_chain_transitively() -> None:
    holds = held_behind([1, 2, 3, 4, 5], {1}, W, R)
    assert (holds[5].behind_event, holds[5].behind_txid, holds[5].table) == ("e2", 2, "order")


def test_nothing_held_when_nothing_is() -> None:
    assert held_behind([1, 2, 3, 4, 5], set(), W, R) == {}


def test_earlier_transactions_are_not_held_behind_a_later_one() -> None:
    assert held_behind([2, 1], {1}, W, R) == {}


def test_the_ledger_grows_during_replay() -> None:
    ledger = HeldBack()
    assert ledger.depends(2, W[2], R[2]) is None
    ledger.hold(1, W[1])  # found to conflict when applied
    hold = ledger.depends(2, W[2], R[2])
    assert hold is not None and hold.behind_txid == 1


def test_references_are_derived_from_the_foreign_key_columns() -> None:
    from drledger.holdback import ForeignKey, references_of

    fks = [
        ForeignKey("order_customer_fk", "order", ("customer_id",), "customer", ("id",)),
        ForeignKey("order_shop_fk", "order", ("shop_a", "shop_b"), "shop", ("a", "b")),
        ForeignKey("order_other_fk", "order", ("x",), "not_captured", ("id",)),
    ]
    parents = {"customer": ["id"], "shop": ["a", "b"]}
    refs = references_of('{"id": 1, "customer_id": 7, "shop_a": 2, "shop_b": "z", "x": 3}', fks, parents)
    assert refs == [
        Reference("order_customer_fk", ("customer", "7")),
        Reference("order_shop_fk", ("shop", '{"a": 2, "b": "z"}')),
    ]
    assert references_of('{"id": 1, "customer_id": null}', fks[:1], parents) == []


def test_a_change_taking_a_unique_value_a_held_back_change_gives_up_waits_behind_it() -> None:
    from drledger.holdback import HeldBack, UniqueKey, frees, takes

    email = [UniqueKey("customer_email_key", "customer", ("email",))]
    moved = frees("update", '{"id": 1, "email": "x@e"}', '{"id": 1, "email": "old@e"}', email)
    assert moved == {("customer", "customer_email_key", "x@e")}
    assert (
        frees("update", '{"id": 1, "email": "x@e", "n": 1}', '{"id": 1, "email": "x@e", "n": 2}', email)
        == set()
    )
    assert frees("delete", None, '{"id": 1, "email": "x@e"}', email) == moved
    assert takes("insert", None, '{"id": 2, "email": "x@e"}', email) == moved
    assert takes("insert", None, '{"id": 2, "email": null}', email) == set()  # NULLs never clash
    assert takes("delete", None, '{"id": 2, "email": "x@e"}', email) == set()
    ledger = HeldBack()
    ledger.hold(1, [("e1", ("customer", "1"))], [("e1", ("customer", "1"), v) for v in moved])
    hold = ledger.depends(2, [("e2", ("customer", "2"))], [], moved)
    assert hold is not None and (hold.behind_event, hold.behind_txid, hold.key) == ("e1", 1, "1")
    assert "it takes the value x@e of customer_email_key" in hold.text()
    assert (
        ledger.depends(3, [("e3", ("customer", "3"))], [], {("customer", "customer_email_key", "y@e")})
        is None
    )


def test_a_foreign_key_to_a_unique_column_finds_its_parent_by_value() -> None:
    from drledger.holdback import ForeignKey, HeldBack, UniqueKey, ValueReference, references_of

    email = UniqueKey("customer_email_key", "customer", ("email",))
    fk = ForeignKey("note_email_fk", "note", ("customer_email",), "customer", ("email",))
    refs = references_of(
        '{"id": 1, "customer_email": "b@e"}', [fk], {"customer": ("id",)}, {"customer": [email]}
    )
    assert refs == [ValueReference("note_email_fk", ("customer", "customer_email_key", "b@e"))]
    assert references_of('{"id": 1, "customer_email": "b@e"}', [fk], {"customer": ("id",)}) == []
    ledger = HeldBack()
    ledger.hold(1, [("e1", ("customer", "2"))], taken=[("e1", ("customer", "2"), refs[0].value)])  # type: ignore[union-attr]
    hold = ledger.depends(2, [("e2", ("note", "1"))], refs)
    assert (
        hold is not None and hold.key == "2" and hold.reason == "it references that row through note_email_fk"
    )
