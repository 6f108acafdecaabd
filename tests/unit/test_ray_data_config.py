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


def test_ingest_cuts_the_file_list_into_blocks_of_about_16_files_with_work_for_every_actor():
    from echoprime.commands.ingest_run import input_blocks

    assert input_blocks(1772, 2) == 110  # ~16 files a block (4 a block left cores idle)
    assert input_blocks(30, 2) == 8  # a small archive: still 4 blocks per actor
    assert input_blocks(5, 2) == 5  # never more blocks than files
    assert input_blocks(1, 4) == 1
    assert input_blocks(12_000_000, 64) == 400  # capped
