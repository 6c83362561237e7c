"""MPI IDs: unique by construction, not sequential-looking, every typo caught."""

from __future__ import annotations

import itertools

import pytest

from shared import ids


def test_ids_of_different_nodes_never_collide() -> None:
    seen = set()
    for node in (0, 1, 2, 7, ids.MAX_NODE_NUMBER):
        for counter in range(2000):
            seen.add(ids.mint("SN", "DKR", 26, node, counter)[10:17])
    assert len(seen) == 5 * 2000


def test_id_round_trips_to_its_node_and_counter() -> None:
    mpi_id = ids.mint("SN", "THI", 26, 42, 123_456)
    assert ids.parse(mpi_id).origin() == (42, 123_456)
    assert mpi_id.startswith("SN-THI-26-")


def test_consecutive_ids_do_not_look_sequential() -> None:
    a, b = ids.mint("SN", "DKR", 26, 0, 1), ids.mint("SN", "DKR", 26, 0, 2)
    assert sum(x != y for x, y in zip(a[10:17], b[10:17], strict=True)) >= 3


def test_lower_case_and_spaces_are_accepted() -> None:
    mpi_id = ids.mint("SN", "DKR", 26, 0, 5)
    assert str(ids.parse(f"  {mpi_id.lower()} ")) == mpi_id


@pytest.mark.parametrize("counter", [0, 1, 999, 65_535])
def test_every_single_substitution_is_caught(counter: int) -> None:
    mpi_id = ids.mint("CI", "ABJ", 25, 3, counter)
    for pos, original in enumerate(mpi_id):
        if original == "-":
            continue
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        for c in alphabet:
            if c == original:
                continue
            typo = mpi_id[:pos] + c + mpi_id[pos + 1 :]
            with pytest.raises(ids.IdError) as err:
                ids.parse(typo)
            assert err.value.code == "invalid_check_character", typo


@pytest.mark.parametrize("counter", [0, 17, 4242])
def test_every_neighbour_swap_is_caught(counter: int) -> None:
    mpi_id = ids.mint("SN", "ZIG", 26, 9, counter)
    for pos in range(len(mpi_id) - 1):
        a, b = mpi_id[pos], mpi_id[pos + 1]
        if a == b:
            continue
        swapped = mpi_id[:pos] + b + a + mpi_id[pos + 2 :]
        with pytest.raises(ids.IdError):
            ids.parse(swapped)


def test_malformed_ids_are_refused() -> None:
    for bad in ["", "SN-DKR-26", "hello", "SN-DKR-26-ABCDEFGHJ", "SNDKR26ABCDEFGHJK"]:
        with pytest.raises(ids.IdError) as err:
            ids.parse(bad)
        assert err.value.code == "invalid_mpi_id"


def test_counter_space_is_bounded() -> None:
    with pytest.raises(ValueError):
        ids.mint("SN", "DKR", 26, ids.MAX_NODE_NUMBER + 1, 0)
    assert len({ids.mint("SN", "DKR", 26, n, c) for n, c in itertools.product(range(3), range(3))}) == 9
