"""Per-object locks: one per object while it lives, none kept once it is deleted."""

from mlops_operator import kube


def test_one_lock_per_object_and_none_after_deletion() -> None:
    before = len(kube._locks)
    first = kube.object_lock("ns", "modelversions/iris-1")
    assert kube.object_lock("ns", "modelversions/iris-1") is first
    assert kube.object_lock("ns", "iris") is not first
    kube.forget_lock("ns", "modelversions/iris-1")
    kube.forget_lock("ns", "iris")
    kube.forget_lock("ns", "never-seen")  # forgetting an unknown object is no error
    assert len(kube._locks) == before
    assert kube.object_lock("ns", "modelversions/iris-1") is not first
    kube.forget_lock("ns", "modelversions/iris-1")
