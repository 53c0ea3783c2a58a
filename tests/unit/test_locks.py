"""Per-object locks: one per object while it lives, none kept once it is deleted."""

from mlops_operator.caches import LockTable


def test_one_lock_per_object_and_none_after_deletion() -> None:
    locks = LockTable()
    first = locks.of("ns", "modelversions/iris-1")
    assert locks.of("ns", "modelversions/iris-1") is first
    assert locks.of("ns", "iris") is not first
    assert len(locks) == 2
    locks.forget("ns", "modelversions/iris-1")
    locks.forget("ns", "iris")
    locks.forget("ns", "never-seen")  # forgetting an unknown object is no error
    assert len(locks) == 0
    assert locks.of("ns", "modelversions/iris-1") is not first
