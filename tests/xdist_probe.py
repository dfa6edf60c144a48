"""Run by tests/test_parallel_suite.py under pytest-xdist (not collected by the suite itself: no test_ prefix)."""

import os


def test_native_thread_pools_get_this_workers_share_of_the_cpus():
    import threadpoolctl
    from sklearn.ensemble import HistGradientBoostingClassifier

    assert HistGradientBoostingClassifier  # its import loaded scikit-learn's OpenMP runtime

    share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    # The environment passes it on to the processes a test starts; the pools already loaded follow it.
    assert os.environ["OMP_NUM_THREADS"] == os.environ["OPENBLAS_NUM_THREADS"] == str(share)
    pools = threadpoolctl.threadpool_info()
    assert {pool["internal_api"] for pool in pools} >= {"openmp"}
    assert all(pool["num_threads"] == share for pool in pools), pools
