"""The Ray Data settings every job applies (ray_jobs.common.configure_ray_data)."""

from __future__ import annotations


def test_jobs_read_parquet_with_the_v1_datasource_and_no_progress_bars():
    # V2 (Ray 2.60's default) handed short shard lists to actor pools as one block and took twice
    # as long to read and embed (docs/benchmarks.md, "Ray Data read path").
    import ray.data

    from ray_jobs.common import configure_ray_data

    ctx = ray.data.DataContext.get_current()
    before = (ctx.use_datasource_v2, ctx.enable_progress_bars, ctx.print_on_execution_start)
    try:
        configure_ray_data()
        assert ctx.use_datasource_v2 is False
        assert ctx.enable_progress_bars is False and ctx.print_on_execution_start is False
    finally:
        ctx.use_datasource_v2, ctx.enable_progress_bars, ctx.print_on_execution_start = before
